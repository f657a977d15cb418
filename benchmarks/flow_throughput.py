"""Optical-flow throughput on this machine: training and inference pairs/s and peak memory of the RAFT parent
and child, and the training-step time of every method relative to KD.

    python benchmarks/flow_throughput.py [--steps 5] [--batch 8] [--size 128 128] [--iterations 6]

Random input (cost does not depend on pixel values), AdamW step included. Each measurement runs in its own
process so that peak memory (peak RSS growth over the RSS after building) is not polluted by the others. The
load average before and after is recorded: other work on the machine slows every row alike but not equally.
Writes ``benchmarks/results/flow_throughput.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch

from _timing import median_step, rss_mb, training_step

PARENT, CHILD = "torchvision:raft_large", "torchvision:raft_small"
GENES2 = ["net.feature_encoder", "net.context_encoder"]
ROWS = {
    "parent raft_large (train)": (PARENT, None, {"name": "ce"}),
    "child raft_small (train)": (CHILD, None, {"name": "ce"}),
    "parent raft_large (inference)": (PARENT, None, None),
    "child raft_small (inference)": (CHILD, None, None),
    "ce": (CHILD, None, {"name": "ce"}),
    "kd": (CHILD, PARENT, {"name": "kd"}),
    "fitnet": (CHILD, PARENT, {"name": "fitnet", "genes": ["net.feature_encoder"]}),
    "hkt (2 genes: encoders)": (CHILD, PARENT, {"name": "hkt", "genes": GENES2}),
    "hkt (3 genes: + update GRU)": (CHILD, PARENT, {"name": "hkt", "genes": [*GENES2, "net.update_block.recurrent_block"]}),
}


def measure(label: str, steps: int, batch: int, size: tuple[int, int], iterations: int) -> dict:
    from hkt.methods import build_method
    from hkt.models import build_model
    from hkt.tasks import Flow

    torch.manual_seed(0)
    arch, parent_arch, options = ROWS[label]
    net = build_model(arch, iterations=iterations)
    x = torch.randn(batch, 2, 3, *size)
    y = (torch.randn(batch, 2, *size), torch.ones(batch, *size, dtype=torch.bool))
    if options is None:  # inference
        net.eval()
        base = rss_mb()
        with torch.inference_mode():
            median = median_step(lambda: net(x), steps, warmup=2)
    else:
        options = dict(options)
        parent = build_model(parent_arch, iterations=iterations).eval() if parent_arch else None
        method = build_method(options.pop("name"), net, parent, x[:2], Flow(), **options).train()
        opt = torch.optim.AdamW(method.learnable_parameters(), lr=1e-4)

        base = rss_mb()
        median = median_step(lambda: training_step(method, opt, x, y), steps, warmup=2)
    return {"row": label, "median_step_s": median, "pairs_per_s": batch / median, "peak_rss_growth_mb": rss_mb() - base, "steps": steps}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, nargs=2, default=[128, 128])
    ap.add_argument("--iterations", type=int, default=6)
    ap.add_argument("--out", default="benchmarks/results/flow_throughput")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    size = tuple(args.size)
    if args.one:
        print(json.dumps(measure(args.one, args.steps, args.batch, size, args.iterations)))
        return
    load_before = os.getloadavg()
    rows = []
    for label in ROWS:
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--one",
                label,
                "--steps",
                str(args.steps),
                "--batch",
                str(args.batch),
                "--size",
                *map(str, size),
                "--iterations",
                str(args.iterations),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    kd = next(r for r in rows if r["row"] == "kd")
    for r in rows[4:]:
        r["time_vs_kd"] = r["median_step_s"] / kd["median_step_s"]
    command = (
        f"python benchmarks/flow_throughput.py --steps {args.steps} --batch {args.batch} --size {size[0]} {size[1]} "
        f"--iterations {args.iterations}"
    )
    record = {
        "command": command,
        "setup": f"batch {args.batch} pairs of {size[0]}x{size[1]}, {args.iterations} refinement iterations, CPU, AdamW step included",
        "machine": {
            "cpu_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "load_average_1min": {"before": load_before[0], "after": os.getloadavg()[0]},
        },
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(record, indent=1))
    lines = [
        f"# RAFT throughput ({record['setup']})",
        "",
        f"`{command}` on {torch.get_num_threads()} CPU threads, torch {torch.__version__}; median over {args.steps} steps after 2 "
        f"warm-up steps. 1-minute load average before / after: {load_before[0]:.1f} / "
        f"{record['machine']['load_average_1min']['after']:.1f} "
        "(2 cores; above 2 means other work shared the CPU and every time is inflated).",
        "",
        "| row | median step (s) | pairs/s | peak RSS growth (MB) | time vs kd |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['row']} | {r['median_step_s']:.2f} | {r['pairs_per_s']:.2f} | {r['peak_rss_growth_mb']:.0f} | {r['time_vs_kd']:.2f}x |"
        if "time_vs_kd" in r
        else f"| {r['row']} | {r['median_step_s']:.2f} | {r['pairs_per_s']:.2f} | {r['peak_rss_growth_mb']:.0f} | – |"
        for r in rows
    ]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
