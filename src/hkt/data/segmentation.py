"""Lightning data module for 2-D (or 2.5-D) segmentation of CT slices from LiTS cases.

Splits:
- ``patients`` (the default when there are >= 3 cases): a seeded permutation of cases cut by ``fractions``;
  no patient contributes slices to two splits.
- ``slices`` (the only possibility with one or two cases, e.g. the single offline sample): each case's axial
  slices are cut into contiguous train / validation / test blocks in that order, with ``gap`` unused slices
  between blocks. Neighbouring CT slices are strongly correlated, so this is a *leakage-limited* split of
  one patient: it measures fitting the rest of the same liver, not generalisation to new patients.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from hkt.data import lits
from hkt.data.augment import batch_generator, joint_flip_affine
from hkt.data.datamodule import PositionSampler, SplitData, loader
from hkt.data.sources import data_root


class SliceDataset(Dataset):
    """Axial slices ``(case, z)`` of windowed CT with ``context`` neighbours on each side as channels.

    Items: ``(image (2k+1, H, W) float32 in [-1, 1], mask (H, W) int64)``; indexed by ``i`` or, from
    ``PositionSampler`` (training), by ``(i, epoch, k)``, which adds the key ``[epoch, k]`` that seeds the joint
    image/mask augmentation of the batch on the device (``SegmentationData.on_after_batch_transfer``).
    """

    def __init__(
        self,
        cases: list[tuple[np.ndarray, np.ndarray]],
        index: list[tuple[int, int]],
        window: tuple[float, float],
        context: int,
        size: int | None,
    ) -> None:
        self.cases, self.index, self.window, self.context, self.size = cases, index, window, context, size

    def __len__(self) -> int:
        return len(self.index)

    def _item(self, i: int) -> tuple[Tensor, Tensor]:
        c, z = self.index[i]
        hu, labels = self.cases[c]
        zs = np.clip(np.arange(z - self.context, z + self.context + 1), 0, len(hu) - 1)  # replicate at the volume's ends
        image = torch.from_numpy(lits.window(np.asarray(hu[zs]), *self.window))
        mask = torch.from_numpy(np.asarray(labels[z]).astype(np.int64))
        if self.size and image.shape[-2:] != (self.size, self.size):
            image = F.interpolate(image[None], size=(self.size, self.size), mode="bilinear", align_corners=False)[0]
            mask = F.interpolate(mask[None, None].float(), size=(self.size, self.size), mode="nearest")[0, 0].long()
        return image, mask

    def __getitem__(self, key: int | tuple[int, int, int]) -> tuple[Tensor, ...]:
        if not isinstance(key, tuple):
            return self._item(key)
        i, epoch, k = key
        return (*self._item(i), torch.tensor([epoch, k]))


class SegmentationData(SplitData):
    """Options of ``SegmentationData`` (keyword arguments; configs set them by name).

    Args:
        name: ``lits`` (the only layout so far).
        root: folder with ``volume-N.nii[.gz]`` / ``segmentation-N.nii[.gz]``; ``None`` = ``$HKT_DATA_DIR/lits-sample``.
        axis: the volume axis that indexes axial slices: 2 in the LiTS release (``(512, 512, D)`` volumes); the
            offline sample (converted from another format) is stored with its axial axis first, ``axis: 0``.
        window: HU window ``[lo, hi]`` mapped to ``[-1, 1]``.
        context: neighbouring slices on each side given as extra channels (0 = 2-D, 1 = 2.5-D with 3 channels).
        size: resize slices to ``size x size`` (``None`` = keep; LiTS slices are 512 x 512).
        split: ``auto`` (``patients`` when there are >= 3 cases, else ``slices``), ``patients`` or ``slices``.
        fractions: train / validation / test shares (of cases, or of each case's slices).
        gap: slices left out between slice blocks (must be >= ``context`` so no input reads another split's slices).
        augment: random flip, rotation (±10°) and scale (0.9–1.1), applied to image and mask together.
        seed: seeds the patient split.
        train_seed: seeds batch order and augmentation (set from the run's seed).
    """

    def __init__(
        self,
        name: str = "lits",
        root: str | None = None,
        axis: int = 2,
        window: tuple[float, float] = (-200.0, 250.0),
        context: int = 0,
        size: int | None = None,
        split: str = "auto",
        fractions: tuple[float, float, float] = (0.6, 0.15, 0.25),
        gap: int = 4,
        batch_size: int = 16,
        num_workers: int = 2,
        augment: bool = True,
        seed: int = 0,
        train_seed: int = 0,
    ) -> None:
        super().__init__()
        if name != "lits":
            raise ValueError(f"unknown segmentation dataset {name!r}; choose lits")
        if split not in ("auto", "patients", "slices"):
            raise ValueError(f"data.split must be auto, patients or slices, got {split!r}")
        if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1) > 1e-6:
            raise ValueError(f"data.fractions must be three positive shares (train, val, test) summing to 1, got {fractions}")
        lo, hi = window
        if not lo < hi:
            raise ValueError(f"data.window must be [lo, hi] with lo < hi (HU), got {window}")
        if context < 0 or gap < context:
            raise ValueError(
                f"data.gap ({gap}) must be >= data.context ({context}) >= 0, or 2.5-D inputs would read slices of another split"
            )
        if axis not in (0, 1, 2):
            raise ValueError(f"data.axis must be 0, 1 or 2 (the volume axis of axial slices), got {axis!r}")
        self.name, self.root, self.axis, self.window, self.context, self.size = name, root, axis, (float(lo), float(hi)), context, size
        self.split, self.fractions, self.gap = split, tuple(fractions), gap
        self.batch_size, self.num_workers, self.augment, self.seed, self.train_seed = batch_size, num_workers, augment, seed, train_seed
        self.num_classes, self.in_channels = len(lits.CLASSES), 2 * context + 1
        self.classes, self.regions = lits.CLASSES, lits.REGIONS
        self.splits: dict[str, SliceDataset] = {}
        self._layout: dict[str, Any] = {}

    def _root(self) -> str:
        return str(self.root) if self.root else str(data_root(None) / "lits-sample")

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        found = lits.find_cases(self._root())
        cases = [lits.cached_case(v, s, self.num_classes, self.axis) for _, v, s in found]
        mode = self.split if self.split != "auto" else ("patients" if len(cases) >= 3 else "slices")
        index: dict[str, list[tuple[int, int]]] = {"train": [], "val": [], "test": []}
        if mode == "patients":
            if len(cases) < 3:
                raise ValueError(f"data.split=patients needs >= 3 cases, {self._root()} has {len(cases)}; use split: slices")
            order = np.random.default_rng(self.seed).permutation(len(cases))
            n_val = max(1, round(self.fractions[1] * len(cases)))
            n_test = max(1, round(self.fractions[2] * len(cases)))
            parts = {"val": order[:n_val], "test": order[n_val : n_val + n_test], "train": order[n_val + n_test :]}
            for split, members in parts.items():
                index[split] = [(int(c), z) for c in sorted(members) for z in range(len(cases[c][0]))]
            self._layout = {split: [found[int(c)][0] for c in sorted(members)] for split, members in parts.items()}
        else:
            self._layout = {}
            for c, (hu, _) in enumerate(cases):
                usable = len(hu) - 2 * self.gap
                n_train, n_val = int(self.fractions[0] * usable), int(self.fractions[1] * usable)
                blocks = {
                    "train": (0, n_train),
                    "val": (n_train + self.gap, n_train + self.gap + n_val),
                    "test": (n_train + n_val + 2 * self.gap, len(hu)),
                }
                for split, (a, b) in blocks.items():
                    index[split] += [(c, z) for z in range(a, b)]
                self._layout[f"case {found[c][0]}"] = {k: [a, b] for k, (a, b) in blocks.items()}
        for split, idx in index.items():
            if not idx:
                raise ValueError(
                    f"the {split} split is empty ({mode} split of {len(cases)} case(s) in {self._root()}); add cases or change "
                    f"data.fractions / data.gap"
                )
        self._mode = mode
        self.splits = {split: SliceDataset(cases, idx, self.window, self.context, self.size) for split, idx in index.items()}

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return loader(self.splits["train"], self.batch_size, self.num_workers, True, self.train_seed, PositionSampler)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int = 0) -> Any:
        """Training batches ``(image, mask, key)``: joint flip / rotation / scale per sample on the device, seeded
        by (seed, epoch, batch, rank). Evaluation batches pass through."""
        if len(batch) != 3:
            return batch
        image, mask, key = batch
        if not self.augment:
            return image, mask
        rank = self.trainer.global_rank if getattr(self, "trainer", None) is not None else 0
        g = batch_generator(self.train_seed, int(key[0, 0]), int(key[0, 1]) // self.batch_size, rank)
        return joint_flip_affine(image, mask, int(torch.randint(0, 2**62, (1,), generator=g)))

    def describe(self) -> dict[str, Any]:
        """Sizes and provenance of the splits, recorded with every result."""
        self.setup()
        return {
            "dataset": self.name,
            "root": self._root(),
            "axis": self.axis,
            "split": self._mode,
            "layout": self._layout,
            "sizes": {k: len(v) for k, v in self.splits.items()},
            "window": self.window,
            "context": self.context,
        }
