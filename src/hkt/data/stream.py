"""Lightning data modules for images decoded one at a time in the DataLoader workers (``hkt.data.images``), with the
ImageNet-style recipe (``hkt.data.recipe``): ``image_folder`` (an ImageFolder tree) and ``hf`` (a Hugging Face
``datasets`` dataset). Memory does not grow with the number of images: only paths (or the Arrow table, memory
mapped) and labels are held.

Splits: the source's own ``val`` / ``test`` when it has them, else a seeded carve of ``train`` (``val_size``,
``test_size``: a count, or a fraction when below 1). Training samples leave the workers augmented and normalised,
with a key ``[epoch, position, rank]``; MixUp / CutMix and label smoothing then run per batch on the device.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from hkt.data.datamodule import PositionSampler, SplitData, check_labels, loader
from hkt.data.images import CorruptImageError, FolderImages, HFImages, index_folder
from hkt.data.recipe import (
    InputConfig,
    Recipe,
    Renormalize,
    TrainCrop,
    eval_transform,
    input_config,
    resolve,
    sample_seed,
    seeded,
    train_batch,
)

log = logging.getLogger("hkt")


class RankedSampler(PositionSampler):
    """``PositionSampler`` that also yields this rank: ``(index, epoch, position, rank)`` seeds a sample's augmentation."""

    def __iter__(self) -> Iterator[tuple[int, int, int, int]]:  # type: ignore[override]
        return ((i, epoch, k, self.rank) for i, epoch, k in super().__iter__())


class ImageDataset(Dataset):
    """``images`` (``FolderImages`` / ``HFImages``) through ``transform``.

    Indexed by ``i`` (evaluation): ``(float (C, H, W) normalised, label)``. Indexed by ``(i, epoch, k, rank)``
    (training, ``hkt.data.recipe.TrainCrop`` seeded by ``(seed, epoch, i, rank)``): ``(uint8 (C, H, W), label,
    [epoch, k, rank])``, normalised later as a batch on the device.
    """

    def __init__(self, images: Any, seed: int = 0) -> None:
        self.images, self.seed = images, seed
        self.labels = torch.from_numpy(images.labels)
        self.transform: Any = None  # set by the data module once the input settings are known

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: int | tuple[int, int, int, int]) -> tuple[Tensor, ...]:
        if isinstance(key, tuple):
            i, epoch, k, rank = key
            with self.images.open(i) as image:  # not decoded yet: the crop may decode a JPEG at reduced scale
                x = seeded(functools.partial(self.transform, where=self.images.where(i)), image, sample_seed(self.seed, epoch, i, rank))
            return x, self.labels[i], torch.tensor([epoch, k, rank])
        return self.transform(self.images.image(key)), self.labels[key]


def _count(size: int | float, n: int, key: str) -> int:
    count = round(size * n) if isinstance(size, float) and size < 1 else int(size)
    if not 0 < count < n:
        raise ValueError(
            f"data.{key}={size} leaves no images on one side of the split of {n} training images; use a count or a fraction in (0, 1)"
        )
    return count


class StreamData(SplitData):
    """What ``image_folder`` and ``hf`` share; subclasses implement ``_read() -> (splits, classes, source)``."""

    def __init__(
        self,
        image_size: int,
        channels: int,
        val_size: int | float,
        test_size: int | float,
        num_classes: int | None,
        train_subset: int | None,
        test_subset: int | None,
        batch_size: int,
        num_workers: int,
        augment: dict[str, Any] | None,
        seed: int,
        train_seed: int,
    ) -> None:
        super().__init__()
        if channels not in (1, 3):
            raise ValueError(f"data.channels must be 3 (RGB) or 1 (greyscale), got {channels}")
        if image_size < 8:
            raise ValueError(f"data.image_size must be at least 8 pixels, got {image_size}")
        self.image_size, self.in_channels, self.val_size, self.test_size = image_size, channels, val_size, test_size
        self.num_classes_option, self.train_subset, self.test_subset = num_classes, train_subset, test_subset
        self.batch_size, self.num_workers, self.seed, self.train_seed = batch_size, num_workers, seed, train_seed
        self.recipe = Recipe.from_options(augment)
        self.input: InputConfig | None = None
        self.parent_input: InputConfig | None = None
        self.splits: dict[str, ImageDataset] = {}

    @classmethod
    def check(cls, options: dict[str, Any]) -> None:
        """Config-time check of the options that are not plain keyword types (``augment``)."""
        Recipe.from_options(options.get("augment"))

    def _read(self) -> tuple[dict[str, Any], tuple[str, ...], dict[str, Any]]:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        parts, classes, self.source = self._read()
        self.num_classes = self.num_classes_option or len(classes)
        check_labels({s: p.labels for s, p in parts.items()}, self.num_classes, self.source["root"])
        rng = np.random.default_rng(self.seed)
        train = parts["train"]
        order = rng.permutation(len(train))
        carved = {}
        for split, size in (("val", self.val_size), ("test", self.test_size)):
            if split not in parts:
                n = _count(size, len(order), f"{split}_size")
                carved[split], order = np.sort(order[:n]), order[n:]
        if self.train_subset:
            order = order[: self.train_subset]
        parts = {
            "train": train.subset(np.sort(order)),
            **{s: train.subset(i) for s, i in carved.items()},
            **{s: p for s, p in parts.items() if s != "train"},
        }
        if self.test_subset:
            parts["test"] = parts["test"].subset(np.sort(rng.permutation(len(parts["test"]))[: self.test_subset]))
        self.source["split_from"] = {s: "train (seeded carve)" if s in carved else s for s in ("val", "test")}
        self.splits = {s: ImageDataset(parts[s], self.train_seed) for s in ("train", "val", "test")}
        if self.input is None:
            self.fit_to(None, None)

    def fit_to(self, child: nn.Module | None, parent: nn.Module | None) -> Renormalize | None:
        """Take the input settings from the child (``hkt.data.recipe.resolve``); return the pre-hook that feeds the
        parent its own normalisation when it declares another one, else ``None``."""
        self.input = resolve(self.recipe, child, self.in_channels)
        declared = input_config(parent)
        own = declared is not None and len(declared.mean) == self.in_channels
        self.parent_input = None if parent is None else declared if own else self.input
        if self.splits:
            self.splits["train"].transform = TrainCrop(self.recipe, self.image_size, self.input, self.in_channels)
            for s in ("val", "test"):
                self.splits[s].transform = eval_transform(self.image_size, self.input)
        hook = self.parent_input.renormalizer(self.input) if self.parent_input is not None else None
        if hook is not None:
            log.info("parent input: %s (the parent's own normalisation, from %s)", hook, self.parent_input.source)
        return hook

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return loader(self.splits["train"], self.batch_size, self.num_workers, True, self.train_seed, RankedSampler, self.resume_epoch)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int = 0) -> Any:
        """Training batches ``(uint8 x, y, key)``: normalised, then erasing, MixUp / CutMix and label smoothing when the
        recipe asks, seeded by ``(seed, epoch, batch, rank)`` (``hkt.data.recipe.train_batch``). Evaluation batches
        pass through."""
        if len(batch) != 3:
            return batch
        x, y, key = batch
        epoch, batch_index, rank = int(key[0, 0]), int(key[0, 1]) // self.batch_size, int(key[0, 2])
        seed = sample_seed(self.train_seed, epoch, -1 - batch_index, rank)  # negative: never a sample's seed
        return train_batch(self.recipe, self.input, x, y, self.num_classes, seed)

    def describe(self) -> dict[str, Any]:
        self.setup()
        inputs = {role: vars(cfg) for role, cfg in (("child", self.input), ("parent", self.parent_input)) if cfg is not None}
        return {
            "dataset": self.name,
            "sizes": {k: len(v) for k, v in self.splits.items()},
            "split_seed": self.seed,
            "num_classes": self.num_classes,
            "image_size": self.image_size,
            "channels": self.in_channels,
            "augment": self.recipe.as_dict(),
            "input": {k: {f: list(v) if isinstance(v, tuple) else v for f, v in d.items()} for k, d in inputs.items()},
            **self.source,
        }


class FolderData(StreamData):
    """An ImageFolder tree ``root/train/<class>/<image>`` (+ ``val/``, ``test/`` when present), any size and mode,
    decoded in the workers.

    Args:
        name: ``image_folder``.
        root: the tree.
        image_size: the side of the square crops the networks see.
        channels: 3 (RGB) or 1 (greyscale).
        val_size, test_size: carved from ``train/`` when the tree has no ``val/`` / ``test/``: a count, or a fraction.
        skip_corrupt: files that fail the header check are skipped and named in the log and in ``result.json``
            (``true``), or stop the run before training, named (``false``).
        augment: the training recipe, ``hkt.data.recipe.Recipe``'s keys.
    """

    def __init__(
        self,
        name: str = "image_folder",
        root: str | None = None,
        image_size: int = 224,
        channels: int = 3,
        val_size: int | float = 0.1,
        test_size: int | float = 0.1,
        skip_corrupt: bool = True,
        num_classes: int | None = None,
        train_subset: int | None = None,
        test_subset: int | None = None,
        batch_size: int = 64,
        num_workers: int = 2,
        augment: dict[str, Any] | None = None,
        seed: int = 0,
        train_seed: int = 0,
    ) -> None:
        super().__init__(
            image_size,
            channels,
            val_size,
            test_size,
            num_classes,
            train_subset,
            test_subset,
            batch_size,
            num_workers,
            augment,
            seed,
            train_seed,
        )
        if not root:
            raise ValueError("data.root is required for image_folder: the folder holding train/<class>/<image>")
        self.name, self.root, self.skip_corrupt = name, root, skip_corrupt

    def _read(self) -> tuple[dict[str, Any], tuple[str, ...], dict[str, Any]]:
        index = index_folder(self.root)
        if index.corrupt:
            listing = "; ".join(f"{p} ({why})" for p, why in sorted(index.corrupt.items()))
            if not self.skip_corrupt:
                raise CorruptImageError(
                    f"{len(index.corrupt)} file(s) under {index.root} cannot be decoded: {listing}. Remove or replace them, "
                    "or set data.skip_corrupt: true to train without them"
                )
            log.warning("image_folder: skipping %d file(s) that cannot be decoded: %s", len(index.corrupt), listing)
        parts = {s: FolderImages(Path(index.root) / s, files, self.in_channels) for s, files in index.splits.items()}
        source = {"root": index.root, "fingerprint": index.fingerprint, "classes": list(index.classes), "skipped": sorted(index.corrupt)}
        return parts, index.classes, source


class HFData(StreamData):
    """A Hugging Face ``datasets`` dataset (``pip install hkt[hf]``): a folder written by ``save_to_disk``, or
    anything ``load_dataset`` takes (a hub id: online, or from its cache with ``HF_DATASETS_OFFLINE=1``).

    Args:
        name: ``hf``.
        path: the ``save_to_disk`` folder or the ``load_dataset`` path.
        image_column, label_column: the columns holding the image (an ``Image`` feature) and the class index.
        train_split, val_split, test_split: split names; ``null`` val/test splits are carved from train.
    """

    def __init__(
        self,
        name: str = "hf",
        path: str | None = None,
        image_column: str = "image",
        label_column: str = "label",
        train_split: str = "train",
        val_split: str | None = None,
        test_split: str | None = "test",
        image_size: int = 224,
        channels: int = 3,
        val_size: int | float = 0.1,
        test_size: int | float = 0.1,
        num_classes: int | None = None,
        train_subset: int | None = None,
        test_subset: int | None = None,
        batch_size: int = 64,
        num_workers: int = 2,
        augment: dict[str, Any] | None = None,
        seed: int = 0,
        train_seed: int = 0,
    ) -> None:
        super().__init__(
            image_size,
            channels,
            val_size,
            test_size,
            num_classes,
            train_subset,
            test_subset,
            batch_size,
            num_workers,
            augment,
            seed,
            train_seed,
        )
        if not path:
            raise ValueError("data.path is required for hf: a save_to_disk folder or a load_dataset path (e.g. a hub id)")
        self.name, self.path, self.image_column, self.label_column = name, path, image_column, label_column
        self.split_names = {"train": train_split, "val": val_split, "test": test_split}

    def _read(self) -> tuple[dict[str, Any], tuple[str, ...], dict[str, Any]]:
        from hkt.models.hub import require

        datasets = require("datasets", "hf")
        folder = Path(self.path).expanduser()
        try:
            if (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file():
                loaded = datasets.load_from_disk(str(folder))
            else:
                loaded = datasets.load_dataset(self.path)
        except (OSError, ValueError, ConnectionError) as e:
            raise FileNotFoundError(
                f"data.path {self.path!r}: cannot load it with datasets ({type(e).__name__}: {e}); give a save_to_disk folder, "
                "or a load_dataset path that is reachable (or cached, with HF_DATASETS_OFFLINE=1)"
            ) from e
        if isinstance(loaded, datasets.Dataset):
            loaded = datasets.DatasetDict({"train": loaded})
        wanted = {s: n for s, n in self.split_names.items() if n is not None}
        for split, n in wanted.items():
            if n not in loaded:
                raise ValueError(f"data.{split}_split {n!r} is not a split of {self.path}; it has {', '.join(loaded)}")
        train = loaded[wanted["train"]]
        for column in (self.image_column, self.label_column):
            if column not in train.column_names:
                key = "image_column" if column == self.image_column else "label_column"
                raise ValueError(f"data.{key} {column!r} is not a column of {self.path}; its columns are {', '.join(train.column_names)}")
        if not isinstance(train.features[self.image_column], datasets.Image):
            raise ValueError(
                f"data.image_column {self.image_column!r} of {self.path} is a {type(train.features[self.image_column]).__name__}, not "
                f"an Image feature; its columns: {', '.join(f'{c} ({type(f).__name__})' for c, f in train.features.items())}"
            )
        feature = train.features[self.label_column]
        parts = {}
        for split, n in wanted.items():
            labels = np.asarray(loaded[n].with_format("numpy")[self.label_column], dtype=np.int64)
            parts[split] = HFImages(loaded[n], self.image_column, labels, self.in_channels, f"{self.path}[{n}]")
        if isinstance(feature, datasets.ClassLabel):
            classes = tuple(feature.names)
        else:
            classes = tuple(str(c) for c in range(int(parts["train"].labels.max()) + 1))
        fingerprint = "|".join(loaded[n]._fingerprint for n in wanted.values())
        return parts, classes, {"root": str(self.path), "fingerprint": fingerprint, "classes": list(classes), "splits": wanted}
