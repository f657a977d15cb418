"""``hkt demo``: a complete, offline HKT experiment in a few minutes on a laptop CPU.

Fashion-MNIST: train a parent (ResNet-20) and a small base child (ResNet-8, width 8) from scratch, then
continue the base child for the same budget with ``ce``, ``kd`` and ``hkt`` (reference configuration: one
gene at the pooled feature, gated GA). Each child is selected on a validation split carved from the
training set and tested once. Prints a table and saves ``demo.png``, ``demo.json`` and ``demo.md``.

The demo pins the CPU thread count (``threads``, default 2) and PyTorch's deterministic algorithms: a convolution
sums in an order set by its thread count (and by the CPU's vector kernels), and over four epochs of training
round-off of one ulp grows into tenths of a point. At one thread count on one kind of CPU the table is bit for bit
the same; the README states how far it moves between thread counts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hkt.config import load_config
from hkt.export import export
from hkt.io import savefig, write_atomic
from hkt.models import build_model
from hkt.training.run import fit_or_resume, load_trained


def _run(name: str, overrides: list[str], out: Path) -> dict[str, Any]:
    print(f"\n== {name} ==", flush=True)
    return fit_or_resume(load_config(None, overrides + [f"out_dir={out / name}"]))


def run_demo(
    out_dir: str = "runs/demo", epochs: int = 4, train_subset: int = 15000, seed: int = 0, threads: int = 2
) -> list[dict[str, Any]]:
    import torch

    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    torch.set_num_threads(threads)
    out = Path(out_dir)
    common = [
        "data.name=fashion_mnist",
        f"data.train_subset={train_subset}",
        "data.val_size=5000",
        "data.num_workers=2",
        f"seed={seed}",
        "trainer.enable_model_summary=false",
        "trainer.deterministic=true",
    ]
    _run("parent", common + ["child.arch=resnet20", f"trainer.max_epochs={epochs}", "optim.lr=0.1"], out)
    _run("base", common + ["child.arch=resnet8", "child.width=8", f"trainer.max_epochs={epochs}", "optim.lr=0.1"], out)
    # ship the base as a plain child file: every method below starts from exactly these weights
    base_file = out / "base" / "export" / "child.safetensors"
    if not base_file.exists():
        cfg = load_config(None, common + ["child.arch=resnet8", "child.width=8", f"out_dir={out / 'base'}"])
        data, module = load_trained(cfg)
        export(module.method, build_model("resnet8", 10, 1, 8), data.example_input(8), out / "base" / "export")
    family = [
        "child.arch=resnet8",
        "child.width=8",
        f"child.weights={base_file}",
        "parent.arch=resnet20",
        f"parent.weights={out / 'parent' / 'checkpoints' / 'best.ckpt'}",
        f"trainer.max_epochs={epochs}",
        "optim.lr=0.02",
    ]
    methods = {
        "ce": ["method={name: ce}", "parent.arch=null", "parent.weights=null"],
        "kd": ["method={name: kd, temperature: 4}"],
        "hkt": ["method={name: hkt, genes: [avgpool], attention: gated}"],
    }
    rows = []
    for name, extra in methods.items():
        rec = _run(name, common + family + extra, out)
        rows.append(
            {
                "method": name,
                "val_acc": rec["val_acc_best"],
                "test_acc": rec["test_acc"],
                "wall_s": rec["fit_wall_s"],
                "epochs": rec["epochs"],
                "threads": threads,
            }
        )
    table = format_table(rows, epochs, train_subset, threads)
    print("\n" + table)
    write_atomic(out / "demo.md", table + "\n")
    write_atomic(out / "demo.json", json.dumps(rows, indent=1))
    plot(rows, out / "demo.png")
    print(f"saved {out / 'demo.md'}, {out / 'demo.json'}, {out / 'demo.png'}")
    return rows


def format_table(rows: list[dict[str, Any]], epochs: int, train_subset: int, threads: int = 2) -> str:
    lines = [
        f"Fashion-MNIST, child ResNet-8 (width 8) from a trained base, parent ResNet-20; {epochs} epochs on "
        f"{train_subset} training images, one seed, {threads} CPU thread{'s' if threads > 1 else ''}; test accuracy of "
        "the validation-selected epoch.",
        "",
        "| method | val acc (%) | test acc (%) | wall time (s) |",
        "|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['method']} | {100 * r['val_acc']:.2f} | {100 * r['test_acc']:.2f} | {r['wall_s']:.0f} |")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
    for r in rows:
        ep = [e["epoch"] + 1 for e in r["epochs"]]
        ax.plot(ep, [100 * e["val/acc"] for e in r["epochs"]], marker="o", label=r["method"])
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title("hkt demo: Fashion-MNIST child")
    ax.legend()
    fig.tight_layout()
    savefig(fig, path)
    plt.close(fig)
