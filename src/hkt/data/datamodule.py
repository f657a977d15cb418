"""Lightning data module for small image-classification datasets held in memory as uint8 arrays.

Splits: a seeded validation split carved from the training set (``val_from: train``, default), or, for
pretrained checkpoints that saw the whole training set, a seeded half of the test set (``val_from: test``;
the other half is then the test split). The test split is evaluated once, at the end.

Training batches leave the loader as uint8 images plus a ``(epoch, position)`` key and are cropped, flipped and
normalised as a batch on the training device (``hkt.data.augment``, in ``on_after_batch_transfer``); evaluation
batches are normalised float images.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torchvision.transforms import v2

from hkt.data import sources
from hkt.data.augment import batch_generator, crop_flip, normalize

DATASETS = {
    # name: (loader, mean, std, crop padding for training augmentation, horizontal flip)
    # CIFAR uses ImageNet statistics: the published checkpoints were trained with them.
    "cifar10": (sources.cifar10, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 4, True),
    "cifar100": (sources.cifar100, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 4, True),
    "fashion_mnist": (sources.fashion_mnist, (0.2860,), (0.3530,), 2, True),
}


class EpochSampler(DistributedSampler):
    """Shuffles by ``(seed, epoch)`` and yields ``(index, epoch)`` so that augmentation is seeded per sample
    and epoch too: an interrupted run resumed at epoch ``e`` sees exactly the batches it would have seen,
    whatever the number of workers. Being a ``DistributedSampler``, it also shards under DDP."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        distributed = dist.is_available() and dist.is_initialized()
        super().__init__(
            dataset,
            num_replicas=dist.get_world_size() if distributed else 1,
            rank=dist.get_rank() if distributed else 0,
            shuffle=True,
            seed=seed,
            drop_last=True,
        )

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        return ((i, self.epoch) for i in super().__iter__())


class PositionSampler(EpochSampler):
    """``EpochSampler`` that also yields each sample's position in this rank's epoch order, ``(i, epoch, k)``:
    with ``drop_last`` batching, batch ``k // batch_size`` of the epoch; it seeds that batch's augmentation."""

    def __iter__(self) -> Iterator[tuple[int, int, int]]:  # type: ignore[override]
        return ((i, epoch, k) for k, (i, epoch) in enumerate(super().__iter__()))


def loader(
    data: Dataset,
    batch_size: int,
    num_workers: int,
    train: bool = False,
    seed: int = 0,
    sampler: type[EpochSampler] = EpochSampler,
    epoch: int = 0,
) -> DataLoader:
    """A split's loader: training batches come from ``sampler`` (seeded order and augmentation, DDP shards, last
    partial batch dropped), starting at ``epoch``; evaluation batches in order, all of them."""
    if train:
        order = sampler(data, seed)
        order.set_epoch(epoch)
    return DataLoader(
        data,
        batch_size=batch_size,
        sampler=order if train else None,
        drop_last=train,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )


class SplitData(L.LightningDataModule):
    """What every hkt data module shares: after ``setup`` it holds ``splits`` (``train``, ``val`` and, unless
    ``test_dataloader`` is overridden, ``test``); subclasses set ``batch_size``, ``num_workers``, ``train_seed``."""

    splits: dict[str, Dataset]
    batch_size: int
    num_workers: int
    train_seed: int

    @classmethod
    def check(cls, options: dict[str, Any]) -> None:
        """Config-time checks of options that a signature cannot type (nested mappings); none here."""

    def fit_to(self, child: nn.Module | None, parent: nn.Module | None) -> Any:
        """Adopt the networks' input settings (streaming sources: normalisation, interpolation); return a forward
        pre-hook that converts the loader's input into the parent's, or ``None`` (always, here)."""
        return None

    def example_input(self, n: int = 2) -> Tensor:
        """A small real batch of ``n`` validation inputs for dry runs (adapter sizing)."""
        self.setup()
        val = self.splits["val"]
        return torch.stack([val[i % len(val)][0] for i in range(n)])

    resume_epoch = 0  # the epoch a resumed run starts with (``load_state_dict``)

    def state_dict(self) -> dict[str, Any]:
        """Saved in every checkpoint: the epoch a run resumed from it starts with. Lightning sets the sampler's epoch
        only after it has created the resumed epoch's iterator, and a loader with workers draws its first batches at
        creation, so without this a resumed run would replay epoch 0's order and augmentation."""
        return {"epoch": self.trainer.fit_loop.epoch_progress.current.processed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.resume_epoch = int(state["epoch"])

    def _loader_for(self, split: str) -> DataLoader:
        self.setup()
        train = split == "train"
        return loader(
            self.splits[split], self.batch_size, self.num_workers, train, self.train_seed, epoch=self.resume_epoch if train else 0
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader_for("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader_for("val")

    def test_dataloader(self) -> DataLoader | list[DataLoader]:
        return self._loader_for("test")


def check_labels(labels: dict[str, np.ndarray], num_classes: int, source: str) -> None:
    """Every split's labels lie in ``[0, num_classes)``; else a ``ValueError`` naming the split, a few offending
    values and the fix (a corrupt label must not silently add a class or be scored as an ordinary mistake)."""
    for split, y in labels.items():
        bad = (y < 0) | (y >= num_classes)
        if bad.any():
            values = sorted(set(y[bad].tolist()))
            raise ValueError(
                f"{split} labels of {source} fall outside the {num_classes} classes [0, {num_classes}): {int(bad.sum())} "
                f"label(s), values {values[:5]}{' …' if len(values) > 5 else ''}. Fix or remove those samples, or set "
                "data.num_classes if the dataset really has more classes."
            )


class ArrayDataset(Dataset):
    """``images`` uint8 ``(N, H, W, C)``, ``labels`` ``(N,)``.

    Indexed by ``i``: ``(transform(uint8 (C, H, W)), label)``. Indexed by ``(i, epoch, k)`` (``PositionSampler``,
    training): ``(uint8 (C, H, W), label, [epoch, k])``, augmented later as a batch on the device.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Any = None) -> None:
        self.images = torch.from_numpy(images).permute(0, 3, 1, 2)  # a view: no copy
        self.labels = torch.from_numpy(labels)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: int | tuple[int, int, int]) -> tuple[Tensor, ...]:
        if isinstance(key, tuple):
            i, epoch, k = key
            return self.images[i], self.labels[i], torch.tensor([epoch, k])
        return self.transform(self.images[key]), self.labels[key]


class ImageClassificationData(SplitData):
    """Options of ``ImageClassificationData`` (keyword arguments; configs set them by name).

    Args:
        name: ``cifar10`` | ``cifar100`` | ``fashion_mnist`` (``image_folder`` and ``hf`` stream: ``hkt.data.stream``).
        root: dataset folder (see ``hkt.data.sources``); ``None`` uses the environment defaults.
        val_size: validation images (from train, or from test when ``val_from == "test"``).
        val_from: ``train`` | ``test``.
        num_classes: classes of the child's head; ``None`` = the dataset's classes (10, or the class folders of
            an ImageFolder tree). Never inferred from the labels: every split's labels are checked against it.
        train_subset: use only this many training images (after carving validation), ``None`` = all.
        test_subset: evaluate on only this many test images, ``None`` = all.
        seed: seeds the splits.
        train_seed: seeds the order and augmentation of training batches (set from the run's seed).
    """

    def __init__(
        self,
        name: str = "cifar10",
        root: str | None = None,
        download: bool = False,
        val_size: int = 5000,
        val_from: str = "train",
        num_classes: int | None = None,
        train_subset: int | None = None,
        test_subset: int | None = None,
        batch_size: int = 128,
        num_workers: int = 2,
        augment: bool = True,
        seed: int = 0,
        train_seed: int = 0,
    ) -> None:
        super().__init__()
        if name not in DATASETS:
            raise ValueError(
                f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)} (held in memory), image_folder (a folder "
                "of your own images, any size) or hf (a Hugging Face dataset)"
            )
        if val_from not in ("train", "test"):
            raise ValueError(f"data.val_from must be 'train' or 'test', got {val_from!r}")
        self.name, self.root, self.download = name, root, download
        self.val_size, self.val_from, self.seed, self.train_seed = val_size, val_from, seed, train_seed
        self.train_subset, self.test_subset, self.num_classes_option = train_subset, test_subset, num_classes
        self.batch_size, self.num_workers, self.augment = batch_size, num_workers, augment
        loader, mean, std, pad, flip = DATASETS[name]
        self._loader = loader
        self.eval_transform = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])
        self.mean, self.std = torch.tensor(mean), torch.tensor(std)
        self._pad, self._flip = pad, flip
        self.splits: dict[str, ArrayDataset] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        decoded = self._loader(self.root, self.download)
        train_x, train_y, test_x, test_y = decoded.train_x, decoded.train_y, decoded.test_x, decoded.test_y
        self.num_classes = self.num_classes_option or len(decoded.classes)
        self.source = {"root": decoded.root, "fingerprint": decoded.fingerprint, "classes": list(decoded.classes)}
        check_labels({"training": train_y, "test": test_y}, self.num_classes, decoded.root)
        rng = np.random.default_rng(self.seed)
        # every split is a seeded permutation: folders list images class by class, so a prefix of an
        # unshuffled index would be a single class
        train_order, test_order = rng.permutation(len(train_y)), rng.permutation(len(test_y))
        if self.val_from == "train":
            val_idx, train_idx, test_idx = train_order[: self.val_size], train_order[self.val_size :], np.sort(test_order)
            val_x, val_y = train_x[val_idx], train_y[val_idx]
        else:
            val_idx, test_idx, train_idx = test_order[: self.val_size], test_order[self.val_size :], train_order
            val_x, val_y = test_x[val_idx], test_y[val_idx]
        if self.train_subset:
            train_idx = train_idx[: self.train_subset]
        if self.test_subset:  # a random subset, kept in file order
            test_idx = np.sort(rng.permutation(test_idx)[: self.test_subset])
        for split, idx in (("train", train_idx), ("val", val_idx), ("test", test_idx)):
            if len(idx) == 0:
                raise ValueError(f"the {split} split is empty; check data.val_size / data.train_subset / data.test_subset")
        self.splits = {
            "train": ArrayDataset(train_x[train_idx], train_y[train_idx], self.eval_transform),
            "val": ArrayDataset(val_x, val_y, self.eval_transform),
            "test": ArrayDataset(test_x[test_idx], test_y[test_idx], self.eval_transform),
        }
        self.in_channels = train_x.shape[3]

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return loader(self.splits["train"], self.batch_size, self.num_workers, True, self.train_seed, PositionSampler, self.resume_epoch)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int = 0) -> Any:
        """Training batches ``(uint8 x, y, key)``: crop + flip per sample (seeded by seed, epoch, batch, rank),
        then normalise, on the device the batch is on. Evaluation batches pass through."""
        if len(batch) != 3:
            return batch
        x, y, key = batch
        if self.augment and (self._pad or self._flip):
            rank = self.trainer.global_rank if getattr(self, "trainer", None) is not None else 0
            epoch, batch_index = int(key[0, 0]), int(key[0, 1]) // self.batch_size
            x = crop_flip(x, self._pad, self._flip, batch_generator(self.train_seed, epoch, batch_index, rank))
        return normalize(x, self.mean, self.std), y

    def describe(self) -> dict[str, Any]:
        """Sizes and provenance of the splits, recorded with every result."""
        self.setup()
        return {
            "dataset": self.name,
            "val_from": self.val_from,
            "sizes": {k: len(v) for k, v in self.splits.items()},
            "split_seed": self.seed,
            "num_classes": self.num_classes,
            **self.source,
        }
