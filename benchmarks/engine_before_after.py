"""The HKT rows of ``step_cost.py``'s CIFAR and ViT pairs, under the engine of an earlier commit and under this
checkout's, interleaved in one sitting (issue 35's "no slower than before on the CIFAR ResNet and ViT rows").

    python benchmarks/engine_before_after.py --before 1d1eaad [--steps 10] [--rounds 2]

The earlier commit's ``src/`` is unpacked with ``git archive`` into a temporary folder and put first on
``PYTHONPATH`` of each ``step_cost.py --one`` process; everything else (this benchmark, step_cost.py, the
environment) is the same. Each row is measured ``--rounds`` times per engine, alternating, and the median kept.
Writes ``benchmarks/results/engine_before_after.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

import torch

from step_cost import measure_apart

HERE = Path(__file__).parent
ROWS = [  # (pair, label, batch, size): every HKT row of the CIFAR-sized pairs, and KD for the ratio
    ("ResNet-56 -> ResNet-20", label, 128, 32)
    for label in (
        "kd",
        "hkt (pooled gene, reference)",
        "hkt (genes after each stage)",
        "hkt (stages + pooled)",
        "hkt + kd (pooled gene)",
    )
] + [
    ("ResNet-56 -> ViT (patch 4, dim 96, depth 4)", label, 128, 32)
    for label in ("kd", "hkt (one block gene: layer3 -> blocks.3)", "hkt (two block genes: layer2 -> blocks.1, layer3 -> blocks.3)")
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", required=True, help="a commit whose engine to compare against")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default=str(HERE / "results" / "engine_before_after"))
    args = ap.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", args.before], check=True, capture_output=True, text=True).stdout.strip()
    now = subprocess.run(["git", "rev-parse", "--short", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(["git", "archive", commit, "src"], check=True, capture_output=True).stdout
        tarfile.open(fileobj=BytesIO(archive)).extractall(tmp, filter="data")
        engines = {f"before ({commit})": str(Path(tmp) / "src"), f"after ({now})": None}
        times: dict[tuple[str, str, str], list[float]] = {}
        memory: dict[tuple[str, str, str], list[float]] = {}
        for _ in range(args.rounds):
            for pair, label, batch, size in ROWS:
                for name, src in engines.items():
                    if label == "kd" and src:  # KD does not use the engine: measured with this checkout only
                        continue
                    r = measure_apart(pair, label, batch, size, args.steps, src)
                    times.setdefault((name, pair, label), []).append(r["median_step_s"])
                    memory.setdefault((name, pair, label), []).append(r["peak_rss_growth_mb"])
                    print(name, pair, label, round(r["median_step_s"], 3), flush=True)
    after = f"after ({now})"
    rows = []
    for pair, label, _, _ in ROWS:
        if label == "kd":
            continue
        kd = statistics.median(times[(after, pair, "kd")])
        row = {"pair": pair, "method": label}
        for name in engines:
            t = statistics.median(times[(name, pair, label)])
            row[name] = {"median_step_s": t, "time_vs_kd": t / kd, "peak_rss_growth_mb": statistics.median(memory[(name, pair, label)])}
        b, a = row[f"before ({commit})"], row[after]
        row["after_vs_before"] = a["median_step_s"] / b["median_step_s"]
        row["memory_after_vs_before"] = a["peak_rss_growth_mb"] / b["peak_rss_growth_mb"]
        rows.append(row)
    command = f"python benchmarks/engine_before_after.py --before {args.before} --steps {args.steps} --rounds {args.rounds}"
    record = {"command": command, "threads": torch.get_num_threads(), "torch": torch.__version__, "rows": rows}
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(record, indent=1))
    lines = [
        f"# HKT step, engine before ({commit}) and after ({now}), one sitting",
        "",
        f"`{command}` on {torch.get_num_threads()} CPU threads, torch {torch.__version__}; batch 128, 32 px, channels_last; median "
        f"step over {args.steps} steps, median of {args.rounds} alternating rounds; KD with this checkout (it uses no engine).",
        "",
        "| pair | method | before (s) | after (s) | after / before | before vs kd | after vs kd | memory after / before |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        b, a = r[f"before ({commit})"], r[after]
        lines.append(
            f"| {r['pair']} | {r['method']} | {b['median_step_s']:.3f} | {a['median_step_s']:.3f} | {r['after_vs_before']:.2f}x | "
            f"{b['time_vs_kd']:.2f}x | {a['time_vs_kd']:.2f}x | {r['memory_after_vs_before']:.2f}x |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
