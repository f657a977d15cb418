"""Input pipeline throughput (img/s), old per-sample path vs the batched device path, per in-memory dataset,
measured side by side in one process, medians over repeats.

    python benchmarks/input_pipeline.py [--batch 256] [--batches 40] [--repeats 3] [--out benchmarks/results/input_pipeline]

Paths for CIFAR-10 and Fashion-MNIST (training batches of ``--batch`` images, crop with padding + horizontal flip +
normalisation):

- ``old: per-sample v2, N workers``: the loader before this change, torchvision v2 transforms per sample, seeded
  per (seed, epoch, index), default collate;
- ``new: loader + batched crop/flip``: what ships: the loader gathers uint8 samples, then ``hkt.data.augment``
  crops, flips and normalises the whole batch on the device (CPU here, 1 thread);
- ``kernel only``: ``crop_flip`` + ``normalize`` on a uint8 batch already in memory (the device-side cost);
- ``kornia (float, per-sample RandomCrop + RandomHorizontalFlip)``: the maintained library alternative for the same
  augmentation, on the same batch, to justify the hand-written kernel.

For LiTS slices (batch 16, every training slice of the offline case): joint image/mask flip + rotation + scale,
per-sample torchvision v2 in the loader (old) vs kornia's batched ``AugmentationSequential`` on the device (new).

Writes ``<out>.json`` and ``<out>.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torchvision.transforms import v2


class OldArrayDataset(torch.utils.data.Dataset):
    """The per-sample path as it was: v2 transforms per item, seeded per (seed, epoch, index)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: v2.Transform) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        i, epoch = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(hash((0, epoch, i)) & 0x7FFF_FFFF)
            return self.transform(self.images[i]), self.labels[i]


def throughput(make_iter, n_images: int, repeats: int) -> float:
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in make_iter():
            pass
        rates.append(n_images / (time.perf_counter() - start))
    return statistics.median(rates)


def bench_dataset(name: str, batch: int, batches: int, repeats: int) -> list[dict]:
    from hkt.data.augment import batch_generator, crop_flip, normalize
    from hkt.data.datamodule import DATASETS, EpochSampler, ImageClassificationData

    data = ImageClassificationData(name, val_size=1000, train_subset=batch * batches, batch_size=batch, num_workers=0)
    data.setup()
    train = data.splits["train"]
    _, mean, std, pad, flip = DATASETS[name]
    size = tuple(train.images.shape[-2:])
    n = batch * batches
    rows = []
    old_transform = v2.Compose(
        [v2.RandomCrop(size, padding=pad), v2.RandomHorizontalFlip(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    )
    old = OldArrayDataset(train.images, train.labels, old_transform)
    for workers in (0, 2):
        loader = DataLoader(
            old, batch_size=batch, sampler=EpochSampler(old, 0), drop_last=True, num_workers=workers, persistent_workers=workers > 0
        )
        rows.append(
            {"dataset": name, "path": f"old: per-sample v2, {workers} workers", "img_per_s": throughput(lambda: iter(loader), n, repeats)}
        )

    def new_epoch():
        loader = data.train_dataloader()
        for raw in loader:
            yield data.on_after_batch_transfer(raw)

    rows.append(
        {"dataset": name, "path": "new: loader (0 workers) + batched crop/flip + normalise", "img_per_s": throughput(new_epoch, n, repeats)}
    )
    x = train.images[:batch].contiguous()

    def kernel():
        for b in range(batches):
            yield normalize(crop_flip(x, pad, flip, batch_generator(0, 0, b, 0)), torch.tensor(mean), torch.tensor(std))

    rows.append(
        {
            "dataset": name,
            "path": "kernel only: crop_flip + normalize on an in-memory uint8 batch",
            "img_per_s": throughput(kernel, n, repeats),
        }
    )
    try:
        import kornia.augmentation as K

        aug = torch.nn.Sequential(K.RandomCrop(size, padding=pad), K.RandomHorizontalFlip())

        def kornia_path():
            for _ in range(batches):
                yield (aug(x.float().div(255)) - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]

        rows.append(
            {
                "dataset": name,
                "path": "kornia: per-sample RandomCrop + RandomHorizontalFlip (float)",
                "img_per_s": throughput(kornia_path, n, repeats),
            }
        )
    except ImportError:
        rows.append({"dataset": name, "path": "kornia: not installed (pip install kornia)", "img_per_s": None})
    return rows


def bench_lits(batch: int, batches: int, repeats: int) -> list[dict]:
    """LiTS slices (the offline case, 128 x 128): joint image/mask flip + rotation + scale, old per-sample v2
    (tv_tensors) in the loader vs the new batched kornia path on the device."""
    from torchvision import tv_tensors

    from hkt.data.augment import joint_flip_affine
    from hkt.data.datamodule import EpochSampler
    from hkt.data.segmentation import SegmentationData

    data = SegmentationData(batch_size=batch, num_workers=0, axis=0)
    data.setup()
    train = data.splits["train"]
    joint = v2.Compose([v2.RandomHorizontalFlip(), v2.RandomAffine(degrees=10, scale=(0.9, 1.1))])

    class Old(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(train)

        def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
            i, epoch = key
            image, mask = train[i]
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(hash((0, epoch, i)) & 0x7FFF_FFFF)
                image, mask = joint(tv_tensors.Image(image), tv_tensors.Mask(mask))
            return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)

    old = Old()
    n_batches = len(train) // batch
    n = n_batches * batch
    rows = []
    loader = DataLoader(old, batch_size=batch, sampler=EpochSampler(old, 0), drop_last=True, num_workers=0)
    rows.append(
        {
            "dataset": "lits (128x128 slices)",
            "path": "old: per-sample v2 joint flip/affine, 0 workers",
            "img_per_s": throughput(lambda: iter(loader), n, repeats),
        }
    )

    def new_epoch():
        for raw in data.train_dataloader():
            yield data.on_after_batch_transfer(raw)

    rows.append(
        {
            "dataset": "lits (128x128 slices)",
            "path": "new: loader + batched kornia joint flip/affine",
            "img_per_s": throughput(new_epoch, n, repeats),
        }
    )
    image, mask = torch.stack([train[i][0] for i in range(batch)]), torch.stack([train[i][1] for i in range(batch)])

    def kernel():
        for b in range(n_batches):
            yield joint_flip_affine(image, mask, b)

    rows.append(
        {
            "dataset": "lits (128x128 slices)",
            "path": "kernel only: kornia joint flip/affine on an in-memory batch",
            "img_per_s": throughput(kernel, n, repeats),
        }
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/input_pipeline")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the device-side path on one CPU thread (the target: >= 20k img/s)
    rows = [r for name in ("cifar10", "fashion_mnist") for r in bench_dataset(name, args.batch, args.batches, args.repeats)]
    rows += bench_lits(16, 0, args.repeats)  # the LiTS grid's batch size; every training slice of the offline case
    result = {
        "machine": {"processor": platform.processor() or platform.machine(), "torch_threads": 1, "torch": torch.__version__},
        "batch": args.batch,
        "batches": args.batches,
        "repeats": args.repeats,
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        f"Training input pipeline, batch {args.batch}, {args.batches} batches, median of {args.repeats} passes, 1 torch thread "
        f"(`python benchmarks/input_pipeline.py --batch {args.batch} --batches {args.batches} --repeats {args.repeats}`).",
        "",
        "| dataset | path | img/s |",
        "|---|---|---|",
        *[
            f"| {r['dataset']} | {r['path']} | {r['img_per_s']:,.0f} |" if r["img_per_s"] else f"| {r['dataset']} | {r['path']} | – |"
            for r in rows
        ],
    ]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
