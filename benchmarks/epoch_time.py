"""Wall time of one CIFAR-10 training epoch (20,000 images, JPEG-75 copy), published ResNet-56 parent -> ResNet-20
child, for ce, kd and reference hkt, with the old input pipeline (per-sample v2 transforms in 2 loader workers, as
configured before) and the new one (uint8 loader, batched crop/flip on the device), measured side by side.

    python benchmarks/epoch_time.py [--images 20000] [--out benchmarks/results/epoch_time]

Each (method, pipeline) runs ``trainer.fit`` for one epoch without validation or checkpoints, in this process, in
the order old, new per method (so drift hits both); the wall time is the whole ``fit`` call. Run it alone: two cores
are easily oversubscribed. Writes ``<out>.json`` and ``<out>.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader
from torchvision.transforms import v2

METHODS = {"ce": "{name: ce}", "kd": "{name: kd}", "hkt (reference)": "{name: hkt, genes: [avgpool]}"}


def old_pipeline(data) -> None:  # noqa: ANN001
    """Patch a set-up data module back to the per-sample path: v2 transforms per item, 2 workers."""
    from hkt.data.datamodule import DATASETS, EpochSampler
    from input_pipeline import OldArrayDataset

    _, mean, std, pad, _ = DATASETS["cifar10"]
    train = data.splits["train"]
    transform = v2.Compose(
        [v2.RandomCrop((32, 32), padding=pad), v2.RandomHorizontalFlip(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    )
    old = OldArrayDataset(train.images, train.labels, transform)
    data.train_dataloader = lambda: DataLoader(
        old, batch_size=data.batch_size, sampler=EpochSampler(old, 0), drop_last=True, num_workers=2, persistent_workers=True
    )
    data.on_after_batch_transfer = lambda batch, dataloader_idx=0: batch


def epoch_seconds(method: str, pipeline: str, images: int) -> float:
    from hkt.config import load_config
    from hkt.training.run import build

    parent = [] if method == "{name: ce}" else ["parent.arch=resnet56", "parent.weights=resnet56-cifar10"]
    cfg = load_config(
        None,
        [
            "data.name=cifar10",
            "data.val_from=test",
            f"data.train_subset={images}",
            "data.batch_size=128",
            f"data.num_workers={2 if pipeline == 'old' else 0}",
            "child.arch=resnet20",
            "child.weights=resnet20-cifar10",
            f"method={method}",
            *parent,
        ],
    )
    data, module = build(cfg)
    if pipeline == "old":
        old_pipeline(data)
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )
    start = time.perf_counter()
    trainer.fit(module, datamodule=data)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--out", default="benchmarks/results/epoch_time")
    args = parser.parse_args()
    torch.set_num_threads(2)
    rows = []
    for label, method in METHODS.items():
        times = {p: epoch_seconds(method, p, args.images) for p in ("old", "new")}
        rows.append({"method": label, "old_s": times["old"], "new_s": times["new"], "saving": 1 - times["new"] / times["old"]})
        print(rows[-1], flush=True)
    result = {
        "machine": {"processor": platform.processor() or platform.machine(), "torch_threads": 2, "torch": torch.__version__},
        "images": args.images,
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        f"One CIFAR-10 training epoch ({args.images:,} images, batch 128, JPEG-75 copy), ResNet-56 parent -> ResNet-20 child, 2 CPU "
        f"threads, no validation (`python benchmarks/epoch_time.py --images {args.images}`). Old: per-sample v2 transforms in 2 "
        "loader workers; new: uint8 loader (0 workers), batched crop/flip/normalise on the device.",
        "",
        "| method | old pipeline (s) | new pipeline (s) | saving |",
        "|---|---|---|---|",
        *[f"| {r['method']} | {r['old_s']:.1f} | {r['new_s']:.1f} | {100 * r['saving']:.0f}% |" for r in rows],
    ]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
