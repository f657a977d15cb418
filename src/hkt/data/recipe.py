"""The field's ImageNet-style training recipe for images of any size, from the libraries that define it: torchvision
v2's ``RandomResizedCrop`` + flip, ``TrivialAugmentWide`` / ``RandAugment``, ``RandomErasing``, ``MixUp`` / ``CutMix``;
evaluation resizes to ``image_size / crop_pct`` and centre-crops. Normalisation and interpolation come from the
child's own preprocessing when it declares one (a timm model's ``resolve_data_config``, a Hugging Face model's image
processor), else ImageNet's (``input_config``).

Per-sample transforms run in the DataLoader workers under a seed of ``(seed, epoch, sample index, rank)``
(``seeded``); mixing runs per batch on the training device under a seed of ``(seed, epoch, batch, rank)``; both inside
``torch.random.fork_rng``, so the global RNG (dropout, initialisation) is untouched and a resumed run sees exactly
the batches it would have seen, with any number of workers.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import logging
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from torchvision.transforms import InterpolationMode, RandomResizedCrop, v2

from hkt.options import ConfigError, check_types

log = logging.getLogger("hkt")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Recipe:
    """``data.augment`` of the streaming sources (every key optional).

    Args:
        scale: ``RandomResizedCrop`` area range.
        ratio: ``RandomResizedCrop`` aspect-ratio range.
        flip: random horizontal flip (p = 0.5).
        auto_augment: ``null`` | ``trivial`` (``TrivialAugmentWide``) | ``rand`` (``RandAugment(num_ops=2, magnitude)``).
        magnitude: ``RandAugment``'s magnitude.
        erasing: ``RandomErasing`` probability (after normalisation, as timm applies it).
        mixup: ``MixUp`` alpha (0: off). With ``cutmix`` too, each batch picks one of them (p = 0.5).
        cutmix: ``CutMix`` alpha (0: off).
        label_smoothing: the task's targets become ``(1 - e) * y + e / K`` in training (with or without mixing).
        mean, std: normalisation; ``null``: the child's (timm / Hugging Face), else ImageNet's.
        interpolation: ``bilinear`` | ``bicubic`` | ``nearest``; ``null``: the child's, else bilinear.
        crop_pct: evaluation resizes to ``image_size / crop_pct`` then centre-crops; ``null``: the child's, else 0.875.
    """

    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True
    auto_augment: Literal["trivial", "rand"] | None = None
    magnitude: int = 9
    erasing: float = 0.0
    mixup: float = 0.0
    cutmix: float = 0.0
    label_smoothing: float = 0.0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    interpolation: Literal["bilinear", "bicubic", "nearest"] | None = None
    crop_pct: float | None = None

    @classmethod
    def from_options(cls, options: dict[str, Any] | None) -> Recipe:
        """A ``Recipe`` from the config's ``data.augment`` mapping; an unknown key or a bad value is named."""
        options = dict(options or {})
        fields = {f.name for f in dataclasses.fields(cls)}
        for key in options:
            if key not in fields:
                close = difflib.get_close_matches(key, sorted(fields), n=3)
                hint = f" Did you mean {', '.join(close)}?" if close else f" Valid keys: {', '.join(sorted(fields))}."
                raise ConfigError(f"unknown config key 'data.augment.{key}'.{hint}")
        check_types(options, cls, "data.augment.")
        for key in ("scale", "ratio", "mean", "std"):
            if options.get(key) is not None:
                options[key] = tuple(float(v) for v in options[key])
        recipe = cls(**options)
        problems = [
            (recipe.scale, len(recipe.scale) != 2 or not 0 < recipe.scale[0] <= recipe.scale[1] <= 1, "scale", "[0.08, 1.0]"),
            (recipe.ratio, len(recipe.ratio) != 2 or not 0 < recipe.ratio[0] <= recipe.ratio[1], "ratio", "[0.75, 1.333]"),
            (recipe.erasing, not 0 <= recipe.erasing <= 1, "erasing", "0.25"),
            (recipe.mixup, recipe.mixup < 0, "mixup", "0.8"),
            (recipe.cutmix, recipe.cutmix < 0, "cutmix", "1.0"),
            (recipe.label_smoothing, not 0 <= recipe.label_smoothing < 1, "label_smoothing", "0.1"),
            (recipe.crop_pct, recipe.crop_pct is not None and not 0 < recipe.crop_pct <= 1, "crop_pct", "0.875"),
        ]
        for value, bad, key, example in problems:
            if bad:
                raise ConfigError(f"data.augment.{key} = {value!r} is out of range; e.g. {key}: {example}")
        if (recipe.mean is None) != (recipe.std is None):
            raise ConfigError("data.augment.mean and data.augment.std go together: set both (one value per channel) or neither")
        return recipe

    @property
    def mixes(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0

    def as_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


@dataclass(frozen=True)
class InputConfig:
    """How a network wants its input: normalisation, resampling and evaluation crop, and where that came from."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str
    crop_pct: float
    source: str

    def renormalizer(self, child: InputConfig) -> Renormalize | None:
        """A pre-hook that maps inputs normalised for ``child`` to this network's normalisation, or ``None``."""
        if (self.mean, self.std) == (child.mean, child.std):
            return None
        return Renormalize(child.mean, child.std, self.mean, self.std)


def input_config(model: nn.Module | None) -> InputConfig | None:
    """What ``model`` declares about its input: a timm model's ``timm.data.resolve_data_config``, a Hugging Face
    model's image processor (``AutoImageProcessor`` of its ``name_or_path``, when it has one); else ``None``."""
    if model is None:
        return None
    if getattr(model, "pretrained_cfg", None) is not None:
        from timm.data import resolve_data_config

        cfg = resolve_data_config(model=model)
        return InputConfig(tuple(cfg["mean"]), tuple(cfg["std"]), cfg["interpolation"], cfg["crop_pct"], f"timm:{type(model).__name__}")
    source = getattr(getattr(model, "config", None), "name_or_path", "") or ""
    if source and hasattr(model, "config"):
        from transformers import AutoImageProcessor

        try:
            processor = AutoImageProcessor.from_pretrained(source)
        except (OSError, ValueError):  # no preprocessor_config.json: the model declares nothing
            return None
        mean, std = getattr(processor, "image_mean", None), getattr(processor, "image_std", None)
        if mean is None or std is None:
            return None
        resample = getattr(processor, "resample", None)
        interpolation = {0: "nearest", 2: "bilinear", 3: "bicubic"}.get(int(resample) if resample is not None else 2, "bilinear")
        return InputConfig(tuple(mean), tuple(std), interpolation, float(getattr(processor, "crop_pct", None) or 0.875), f"hf:{source}")
    return None


def resolve(recipe: Recipe, model: nn.Module | None, channels: int) -> InputConfig:
    """The input settings for the network fed by the loader: the recipe's explicit values, else ``model``'s
    (``input_config``), else ImageNet's mean/std (grey: their average), bilinear, crop 0.875."""
    declared = input_config(model)
    if channels == 1:
        default = InputConfig((sum(IMAGENET_MEAN) / 3,), (sum(IMAGENET_STD) / 3,), "bilinear", 0.875, "ImageNet (grey)")
    else:
        default = InputConfig(IMAGENET_MEAN, IMAGENET_STD, "bilinear", 0.875, "ImageNet")
    base = declared if declared is not None and len(declared.mean) == channels else default
    return InputConfig(
        recipe.mean or base.mean,
        recipe.std or base.std,
        recipe.interpolation or base.interpolation,
        recipe.crop_pct or base.crop_pct,
        "data.augment" if recipe.mean else base.source,
    )


class Renormalize:
    """A forward pre-hook: ``x`` normalised with (``mean_in``, ``std_in``) -> normalised with (``mean_out``,
    ``std_out``), one per-channel affine map on the first input. Feeds a parent that wants another normalisation than
    the child (e.g. a CLIP-normalised parent beside an ImageNet-normalised child) from the same batch. Its ``repr``
    states the map, so the parent cache's key (``hkt.parent_cache.parent_fingerprint``) includes it."""

    def __init__(
        self, mean_in: tuple[float, ...], std_in: tuple[float, ...], mean_out: tuple[float, ...], std_out: tuple[float, ...]
    ) -> None:
        self.scale = torch.tensor(std_in) / torch.tensor(std_out)
        self.shift = (torch.tensor(mean_in) - torch.tensor(mean_out)) / torch.tensor(std_out)
        self.text = f"Renormalize(mean {mean_in} -> {mean_out}, std {std_in} -> {std_out})"

    def __call__(self, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        x, *rest = args
        s, b = (t.to(x.device, x.dtype)[:, None, None] for t in (self.scale, self.shift))
        return (x * s + b, *rest)

    def __repr__(self) -> str:
        return self.text


def sample_seed(seed: int, epoch: int, index: int, rank: int) -> int:
    digest = hashlib.blake2b(f"{seed}|{epoch}|{index}|{rank}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF


def seeded(transform: Any, value: Any, seed: int) -> Any:
    """``transform(value)`` with the torch RNG seeded by ``seed``, leaving the global RNG as it was."""
    with torch.random.fork_rng(devices=[]):
        # the CPU generator only: torch.manual_seed also queues a lazy CUDA seeding, with a traceback, 1 ms a sample
        torch.default_generator.manual_seed(seed)
        return transform(value)


def _mode(name: str) -> InterpolationMode:
    return InterpolationMode(name)


class TrainCrop:
    """A training sample from a PIL image that may not be decoded yet (``Image.open``): uint8 ``(C, size, size)``.

    torchvision's ``RandomResizedCrop`` parameters are drawn from the image's upright size read from its header; a
    JPEG whose crop spans at least twice ``size`` is then decoded at 1/2, 1/4 or 1/8 scale (Pillow's ``draft``: the
    DCT skips the detail the resize would discard); the crop and the resize are one ``Image.resize(box=...)``; then
    the flip and the auto-augmentation (torchvision v2, on the PIL image). Normalisation, erasing and mixing run per
    batch on the training device (``StreamData.on_after_batch_transfer``): uint8 crosses the worker boundary, a
    quarter of float32's bytes. Draws come from torch's global RNG, which ``seeded`` scopes per sample."""

    def __init__(self, recipe: Recipe, size: int, cfg: InputConfig, channels: int) -> None:
        self.recipe, self.size, self.channels = recipe, size, channels
        self.resample = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC, "nearest": Image.Resampling.NEAREST}[
            cfg.interpolation
        ]
        interpolation = _mode(cfg.interpolation)
        self.auto = (
            v2.TrivialAugmentWide(interpolation=interpolation)
            if recipe.auto_augment == "trivial"
            else v2.RandAugment(num_ops=2, magnitude=recipe.magnitude, interpolation=interpolation)
            if recipe.auto_augment == "rand"
            else None
        )

    def __call__(self, image: Image.Image, where: str = "image") -> Tensor:
        from hkt.data.images import decode

        width, height = image.size  # from the header: nothing decoded yet
        upright = (height, width) if image.getexif().get(0x0112, 1) in (5, 6, 7, 8) else (width, height)  # EXIF turns
        shape = torch.empty(1, 1, 1).expand(1, upright[1], upright[0])  # the size alone, for torchvision's sampler
        top, left, h, w = RandomResizedCrop.get_params(shape, list(self.recipe.scale), list(self.recipe.ratio))
        reduce = 1 << min(3, int(math.log2(max(1.0, min(h, w) / self.size))))
        if reduce > 1 and image.format == "JPEG":
            image.draft(None, (math.ceil(width / reduce), math.ceil(height / reduce)))
        picture = decode(image, self.channels, where)
        # a draft rounds each side up on its own: scale x and y apart, and keep the box inside the decoded image
        sx, sy = picture.width / upright[0], picture.height / upright[1]
        box = (left * sx, top * sy, min((left + w) * sx, picture.width), min((top + h) * sy, picture.height))
        picture = picture.resize((self.size, self.size), self.resample, box=box)
        if self.recipe.flip and torch.rand(1).item() < 0.5:
            picture = picture.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if self.auto is not None:
            picture = self.auto(picture)
        array = np.asarray(picture)
        return torch.from_numpy(array.copy()).permute(2, 0, 1) if array.ndim == 3 else torch.from_numpy(array.copy())[None]


def eval_transform(size: int, cfg: InputConfig) -> v2.Compose:
    """PIL image -> float ``(C, size, size)``: resize the short side to ``size / crop_pct``, centre crop, normalise."""
    return v2.Compose(
        [
            v2.Resize(int(size / cfg.crop_pct), interpolation=_mode(cfg.interpolation), antialias=True),
            v2.CenterCrop(size),
            v2.PILToTensor(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(cfg.mean, cfg.std),
        ]
    )


def train_batch(recipe: Recipe, cfg: InputConfig, x: Tensor, y: Tensor, num_classes: int, seed: int) -> tuple[Tensor, Tensor]:
    """A training batch from the workers, uint8 ``x (B, C, H, W)``, ``y (B,)``, on its device -> normalised float
    ``x``, then per sample ``RandomErasing`` (after normalisation, as timm applies it), then ``MixUp`` / ``CutMix``
    (torchvision v2; one of the two per batch when both are on) and label smoothing, which make ``y`` class
    probabilities ``(B, K)``. Every method sees the same mixed images; its parent's soft targets are the parent's
    outputs on them. The draws are seeded by ``seed`` (from seed, epoch, batch, rank)."""
    x = x.float().div_(255.0)
    x = x.sub_(torch.tensor(cfg.mean, device=x.device)[:, None, None]).div_(torch.tensor(cfg.std, device=x.device)[:, None, None])
    if not (recipe.erasing or recipe.mixes or recipe.label_smoothing):
        return x, y
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        if recipe.erasing:
            erase = v2.RandomErasing(p=recipe.erasing)
            x = torch.stack([erase(sample) for sample in x])
        target = torch.nn.functional.one_hot(y, num_classes).to(x.dtype)
        mixers = [m(alpha=a, num_classes=num_classes) for m, a in ((v2.MixUp, recipe.mixup), (v2.CutMix, recipe.cutmix)) if a > 0]
        if mixers:
            x, target = v2.RandomChoice(mixers)(x, y)
    if not (recipe.mixes or recipe.label_smoothing):
        return x, y
    e = recipe.label_smoothing
    return x, target * (1 - e) + e / num_classes
