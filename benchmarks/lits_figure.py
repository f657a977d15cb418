"""Figure of a few test slices from a segmentation grid: CT, ground truth and the children of the given methods
(a baseline and HKT variants), liver (green) and tumour (red) drawn as contours, with each slice's liver /
tumour Dice in the titles.

    python benchmarks/lits_figure.py -c configs/compare_lits_cpu.yaml --methods ce hkt hkt_3genes --seed 0

Reads the finished runs' best (validation-selected) checkpoints from the grid's work_dir; writes
``<out_dir>/test_slices.png``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch


def slice_dice(pred: np.ndarray, target: np.ndarray, labels: tuple[int, ...]) -> float:
    p, t = np.isin(pred, labels), np.isin(target, labels)
    total = p.sum() + t.sum()
    return float(2 * (p & t).sum() / total) if total else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config", required=True, help="segmentation grid YAML")
    parser.add_argument("--methods", nargs="+", default=["ce", "hkt"], help="baseline first, then HKT variants")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--slices", type=int, default=4)
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hkt.compare.spec import load_grid, run_config
    from hkt.training.run import load_trained

    grid = load_grid(args.config)
    children = {}
    for name in args.methods:
        data, module = load_trained(run_config(grid, name, args.seed))
        children[name] = module.method.child.eval()
    test = data.splits["test"]
    picks = np.linspace(0, len(test) - 1, args.slices).round().astype(int)
    lo, hi = data.window
    fig, axes = plt.subplots(len(picks), 2 + len(children), figsize=(2.3 * (2 + len(children)), 2.4 * len(picks)), dpi=80)
    for row, i in zip(np.atleast_2d(axes), picks):
        image, mask = test[int(i)]
        ct = image[data.context].numpy()
        preds = {}
        with torch.no_grad():
            for name, child in children.items():
                preds[name] = child(image[None]).argmax(1)[0].numpy()
        panels = [("CT", None), ("ground truth", mask.numpy()), *((n, preds[n]) for n in children)]
        case, z = test.index[int(i)]
        for ax, (title, labels) in zip(row, panels):
            ax.imshow(ct, cmap="gray", vmin=-1, vmax=1)
            if labels is not None:
                for region, colour in (((1, 2), "lime"), ((2,), "red")):
                    if np.isin(labels, region).any():
                        ax.contour(np.isin(labels, region), levels=[0.5], colors=colour, linewidths=0.8)
                if title in children:
                    title = (
                        f"{title}: liver {slice_dice(labels, mask.numpy(), (1, 2)):.2f}, "
                        f"tumour {slice_dice(labels, mask.numpy(), (2,)):.2f}"
                    )
            elif title == "CT":
                title = f"slice {z}, HU [{lo:.0f}, {hi:.0f}]"
            ax.set_title(title, fontsize=7)
            ax.axis("off")
    fig.suptitle(f"{grid.get('name', '')}: test slices, seed {args.seed} (liver green, tumour red)", fontsize=8)
    fig.tight_layout()
    out = Path(grid["out_dir"]) / "test_slices.png"
    fig.savefig(out)
    print(out)


if __name__ == "__main__":
    main()
