"""Lightning data module for optical flow. Items are ``(pair (2, 3, H, W) in [-1, 1], (flow (2, H, W), valid
(H, W) bool))``; a batch stacks pairs as ``(B, 2, 3, H, W)``, one tensor, so every method sees one input.

Training sources: ``synthetic`` (offline, ``hkt.data.flow_synthetic``) or torchvision's ``chairs``
(FlyingChairs), ``things`` (FlyingThings3D, clean pass), ``sintel`` and ``kitti`` (KITTI-2015) under ``root``.
Evaluation sets (each its own test loader, batch 1, full size): ``grove3`` (Middlebury, real ground truth),
``motorcycle`` (Middlebury-2014 stereo from scikit-image: ``u = -disparity``, ``v = 0``, unknown disparity
masked), ``sintel_clean``, ``sintel_final``, ``kitti`` (torchvision, the training splits, as in RAFT's
evaluation). Each set has a scale: images are resized by it and the flow multiplied by it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from hkt.data.datamodule import SplitData, loader
from hkt.data.flow_io import read_flo
from hkt.data.flow_synthetic import SyntheticFlow
from hkt.data.sources import DatasetNotFoundError, data_root

Item = tuple[Tensor, tuple[Tensor, Tensor]]
TORCHVISION = {  # name: (torchvision class, folder under root, keyword arguments, where to get it)
    "chairs": (
        "FlyingChairs",
        "FlyingChairs",
        {"split": "train"},
        "https://lmb.informatik.uni-freiburg.de/resources/datasets/FlyingChairs.en.html",
    ),
    "things": (
        "FlyingThings3D",
        "FlyingThings3D",
        {"split": "train", "pass_name": "clean"},
        "https://lmb.informatik.uni-freiburg.de/resources/datasets/SceneFlowDatasets.en.html",
    ),
    "sintel": ("Sintel", "Sintel", {"split": "train", "pass_name": "clean"}, "http://sintel.is.tue.mpg.de/"),
    "sintel_clean": ("Sintel", "Sintel", {"split": "train", "pass_name": "clean"}, "http://sintel.is.tue.mpg.de/"),
    "sintel_final": ("Sintel", "Sintel", {"split": "train", "pass_name": "final"}, "http://sintel.is.tue.mpg.de/"),
    "kitti": ("KittiFlow", "KittiFlow", {"split": "train"}, "https://www.cvlibs.net/datasets/kitti/eval_scene_flow.php?benchmark=flow"),
}


def _to_pair(im1: Any, im2: Any) -> Tensor:
    """Two images (PIL, ``(H, W[, C])`` arrays or tensors, values 0..255) -> ``(2, 3, H, W)`` in ``[-1, 1]``."""
    out = []
    for im in (im1, im2):
        a = torch.as_tensor(np.asarray(im, dtype=np.float32))
        a = a[..., None].expand(*a.shape, 3) if a.dim() == 2 else a[..., :3]
        out.append(a.permute(2, 0, 1) / 127.5 - 1.0)
    if out[0].shape != out[1].shape:
        raise ValueError(
            f"the two frames differ in size: {tuple(out[0].shape[1:])} vs {tuple(out[1].shape[1:])}; a flow pair needs equal sizes"
        )
    return torch.stack(out)


def rescale(item: Item, scale: float) -> Item:
    """Resize a pair by ``scale`` (bilinear, antialiased), multiply its flow by ``scale``; valid: nearest."""
    if scale == 1.0:
        return item
    pair, (flow, valid) = item
    size = [round(s * scale) for s in pair.shape[-2:]]
    pair = F.interpolate(pair, size=size, mode="bilinear", align_corners=False, antialias=True)
    flow = F.interpolate(flow[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0] * scale
    valid = F.interpolate(valid[None, None].float(), size=size, mode="nearest")[0, 0] > 0.5
    return pair, (flow, valid)


def grove3(root: str | Path | None = None) -> Item:
    """Middlebury Grove3 (640 x 480, greyscale), frames 10 -> 11 with its ground-truth flow."""
    from PIL import Image

    base = Path(root) if root else data_root(None) / "middlebury"
    frames = [base / "other-gray-twoframes" / "Grove3" / f"frame{k}.png" for k in (10, 11)]
    gt = base / "other-gt-flow" / "Grove3" / "flow10.flo"
    missing = [str(p) for p in (*frames, gt) if not p.is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"Grove3 files missing: {missing}; get other-gray-twoframes.zip and other-gt-flow.zip from "
            f"https://vision.middlebury.edu/flow/data/ and unpack them into {base}"
        )
    flow, valid = read_flo(gt)
    return _to_pair(Image.open(frames[0]).convert("L"), Image.open(frames[1]).convert("L")), (
        torch.from_numpy(flow),
        torch.from_numpy(valid),
    )


def motorcycle(grey: bool = True) -> Item:
    """The Middlebury-2014 stereo motorcycle (left -> right, 741 x 500): ``u = -disparity``, ``v = 0``; pixels of
    unknown disparity are invalid. ``grey`` matches the greyscale synthetic training data."""
    import skimage.data

    left, right, disparity = skimage.data.stereo_motorcycle()
    if grey:
        left, right = left.mean(-1), right.mean(-1)
    valid = np.isfinite(disparity)
    flow = np.stack([np.where(valid, -disparity, 0.0), np.zeros_like(disparity)]).astype(np.float32)
    return _to_pair(left, right), (torch.from_numpy(flow), torch.from_numpy(valid))


class TorchvisionFlow(Dataset):
    """A torchvision flow dataset as ``Item``s; training items are randomly cropped to ``crop`` (seeded per
    ``(i, epoch)`` through ``EpochSampler``)."""

    def __init__(self, name: str, root: str | Path, crop: tuple[int, int] | None = None, seed: int = 0) -> None:
        import torchvision.datasets

        cls, folder, kwargs, url = TORCHVISION[name]
        if not (Path(root) / folder).is_dir():
            raise DatasetNotFoundError(
                f"{name}: {Path(root) / folder} does not exist; download it from {url} and set data.root to the folder that holds {folder}/"
            )
        self.data = getattr(torchvision.datasets, cls)(str(root), **kwargs)
        if len(self.data) == 0:
            raise DatasetNotFoundError(
                f"{name}: no samples found under {Path(root) / folder}; check the layout torchvision.datasets.{cls} expects"
            )
        self.crop, self.seed = crop, seed

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, key: int | tuple[int, int]) -> Item:
        i, epoch = key if isinstance(key, tuple) else (key, None)
        im1, im2, flow, valid = self.data[i]
        pair = _to_pair(im1, im2)
        flow = torch.from_numpy(np.asarray(flow, dtype=np.float32))
        valid = torch.from_numpy(np.asarray(valid, dtype=bool)) if valid is not None else (flow.abs() < 1e9).all(0)
        if self.crop and epoch is not None:
            rng = np.random.default_rng([self.seed, epoch, i])
            h, w = self.crop
            y0, x0 = int(rng.integers(0, pair.shape[-2] - h + 1)), int(rng.integers(0, pair.shape[-1] - w + 1))
            pair, flow, valid = pair[..., y0 : y0 + h, x0 : x0 + w], flow[:, y0 : y0 + h, x0 : x0 + w], valid[y0 : y0 + h, x0 : x0 + w]
        return pair, (flow, valid)


class _Fixed(Dataset):
    """One or a few fixed items (the real evaluation pairs)."""

    def __init__(self, items: list[Item]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Item:
        return self.items[i]


class FlowData(SplitData):
    """Options of ``FlowData`` (keyword arguments; configs set them by name).

    Args:
        train: ``synthetic`` | ``chairs`` | ``things`` | ``sintel`` | ``kitti``.
        root: folder holding the torchvision datasets (``FlyingChairs/``, ``Sintel/`` …) and ``middlebury/``;
            ``None`` = ``$HKT_DATA_DIR``.
        train_size, val_size, test_size: synthetic pairs per split (seeded, disjoint seeds); for torchvision
            sources ``val_size`` pairs are carved from the training split and the test split is the eval sets.
        crop: ``[H, W]`` of synthetic pairs / training crops (RAFT needs >= 128 on each side).
        eval_sets: ``{name: scale}`` evaluated at test time, each reported as ``test/<name>_<metric>``.
        seed: seeds the synthetic validation / test pairs and the validation carve-out.
        train_seed: seeds the synthetic training pairs, their order and crops (set from the run's seed).
    """

    def __init__(
        self,
        train: str = "synthetic",
        root: str | None = None,
        train_size: int = 2000,
        val_size: int = 100,
        test_size: int = 100,
        crop: tuple[int, int] = (128, 128),
        eval_sets: dict[str, float] | None = None,
        batch_size: int = 8,
        num_workers: int = 2,
        seed: int = 0,
        train_seed: int = 0,
    ) -> None:
        super().__init__()
        if train != "synthetic" and train not in TORCHVISION:
            raise ValueError(f"data.train must be synthetic or one of {', '.join(TORCHVISION)}, got {train!r}")
        eval_sets = {"grove3": 1.0, "motorcycle": 0.5} if eval_sets is None else dict(eval_sets)
        unknown = set(eval_sets) - {"grove3", "motorcycle", "sintel_clean", "sintel_final", "kitti"}
        if unknown:
            raise ValueError(f"unknown data.eval_sets {sorted(unknown)}; choose from grove3, motorcycle, sintel_clean, sintel_final, kitti")
        if min(crop) < 128:
            raise ValueError(f"data.crop {list(crop)} is too small: RAFT's correlation pyramid needs at least 128 pixels per side")
        self.train, self.root, self.crop, self.eval_sets = train, root, tuple(crop), eval_sets
        self.train_size, self.val_size, self.test_size = train_size, val_size, test_size
        self.batch_size, self.num_workers, self.seed, self.train_seed = batch_size, num_workers, seed, train_seed
        self.in_channels, self.num_classes = 3, 2
        self.splits: dict[str, Dataset] = {}
        self.test_names: list[str] = []

    def _root(self) -> Path:
        return Path(self.root) if self.root else data_root(None)

    def _eval_set(self, name: str) -> Dataset:
        scale = self.eval_sets[name]
        if name == "grove3":
            return _Fixed([rescale(grove3(self._root() / "middlebury"), scale)])
        if name == "motorcycle":
            return _Fixed([rescale(motorcycle(), scale)])
        data = TorchvisionFlow(name, self._root())
        return _Fixed([rescale(data[i], scale) for i in range(len(data))]) if scale != 1.0 else data

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        textures = str(self._root() / "middlebury" / "other-gray-twoframes")
        if self.train == "synthetic":
            # disjoint seeds: training pairs never appear in validation or test
            self.splits["train"] = SyntheticFlow(self.train_size, self.crop, (1, self.train_seed), textures)
            self.splits["val"] = SyntheticFlow(self.val_size, self.crop, (2, self.seed), textures)
            tests = {"synthetic": SyntheticFlow(self.test_size, self.crop, (3, self.seed), textures)}
        else:
            full = TorchvisionFlow(self.train, self._root(), self.crop, self.train_seed)
            order = np.random.default_rng(self.seed).permutation(len(full))
            self.splits["train"], self.splits["val"] = (
                Subset(full, order[self.val_size :].tolist()),
                Subset(full, order[: self.val_size].tolist()),
            )
            tests = {}
        tests.update({name: self._eval_set(name) for name in self.eval_sets})
        for name, data in tests.items():
            h, w = data[0][0].shape[-2:]
            if min(h, w) < 128:
                raise ValueError(
                    f"evaluation set {name} at scale {self.eval_sets.get(name, 1.0)} is {w}x{h}; RAFT needs at least 128 pixels "
                    f"per side: raise data.eval_sets.{name}"
                )
        for split, data in (("train", self.splits["train"]), ("val", self.splits["val"]), *tests.items()):
            if len(data) == 0:
                raise ValueError(f"the {split} split is empty; raise data.train_size / val_size / test_size")
        if not tests:
            raise ValueError("no test set: with a torchvision training source, list evaluation sets in data.eval_sets")
        self.test_names = list(tests)
        self.tests = tests

    def describe(self) -> dict[str, Any]:
        self.setup()
        return {
            "train": self.train,
            "crop": list(self.crop),
            "sizes": {
                "train": len(self.splits["train"]),
                "val": len(self.splits["val"]),
                **{f"test/{k}": len(v) for k, v in self.tests.items()},
            },
            "eval_scales": self.eval_sets,
        }

    def test_dataloader(self) -> list[DataLoader]:
        """One loader per test set, in ``test_names`` order; real pairs one at a time (sizes differ)."""
        self.setup()
        return [loader(data, self.batch_size if name == "synthetic" else 1, self.num_workers) for name, data in self.tests.items()]
