"""Colour-coded flow of the real evaluation pairs (Grove3, motorcycle) from a flow grid: the first frame, ground
truth, the parent, a baseline child and an HKT child, on one common colour scale per pair, EPE in the titles.

    python benchmarks/flow_figure.py -c configs/compare_flow_cpu.yaml --baseline ce --hkt hkt --seed 0

Reads the runs' best (validation-selected) checkpoints from the grid's work_dir; writes
``<out_dir>/flow_<pair>.png`` and ``<out_dir>/zero_flow_epe.json`` (the EPE of predicting no motion on every test
set: the floor a trained network must beat to have learned anything).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config", required=True)
    parser.add_argument("--baseline", default="ce")
    parser.add_argument("--hkt", default="hkt")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hkt.compare.spec import load_grid, run_config
    from hkt.training.run import load_trained
    from hkt.visualize import flow_to_rgb

    grid = load_grid(args.config)
    nets = {}
    data = None
    for label, name, seed in (
        ("parent", "parent", None),
        (f"child, {args.baseline}", args.baseline, args.seed),
        (f"child, {args.hkt}", args.hkt, args.seed),
    ):
        data, module = load_trained(run_config(grid, name, seed))
        nets[label] = module.method.child.eval()
    from hkt.tasks.flow import FlowError

    zero = {}
    for name, test_set in data.tests.items():
        metric = FlowError("epe")
        for i in range(len(test_set)):
            _, (gt, valid) = test_set[i]
            metric.update(torch.zeros_like(gt)[None], (gt[None], valid[None]))
        zero[name] = metric.compute().item()
    (Path(grid["out_dir"]) / "zero_flow_epe.json").write_text(json.dumps({"command": " ".join(sys.argv), "zero_flow_epe": zero}, indent=1))
    print("zero-flow EPE:", zero)
    for pair_name in [n for n in data.test_names if n != "synthetic"]:
        pair, (gt, valid) = data.tests[pair_name][0]
        flows, titles = [gt], ["ground truth"]
        with torch.no_grad():
            for label, net in nets.items():
                pred = net(pair[None])[-1][0]
                epe = (pred - gt).norm(dim=0)[valid].mean().item()
                flows.append(pred)
                titles.append(f"{label}: EPE {epe:.2f}")
        images = flow_to_rgb(flows)
        fig, axes = plt.subplots(1, len(flows) + 1, figsize=(3.0 * (len(flows) + 1), 2.6), dpi=80)
        axes[0].imshow(pair[0, 0].numpy(), cmap="gray")
        axes[0].set_title(f"{pair_name}, frame 1", fontsize=8)
        for ax, image, title in zip(axes[1:], images, titles):
            ax.imshow(image.permute(1, 2, 0).numpy())
            ax.set_title(title, fontsize=8)
        for ax in axes:
            ax.axis("off")
        fig.suptitle(f"{grid.get('name', '')}, seed {args.seed}: one colour scale per row", fontsize=8)
        fig.tight_layout()
        out = Path(grid["out_dir"]) / f"flow_{pair_name}.png"
        fig.savefig(out)
        plt.close(fig)
        print(out)


if __name__ == "__main__":
    main()
