"""The edge children's one-stage-gene rows of ``step_cost.py``, repeated in alternating rounds: how much a ratio to KD
moves between measurements, and whether MobileNetV3-Large and EfficientNet-B0 stay within 10 % of ResNet-18's ratio
(issue 35's goal) once that noise is seen.

    python benchmarks/edge_rounds.py [--rounds 3] [--steps 10]

Each round measures, for each child, KD and then HKT (one stage gene, with its floor and mixes), every row in its own
``step_cost.py --one`` process; a ratio divides by the KD of the same child and round. Writes
``benchmarks/results/edge_rounds.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from step_cost import EDGE_PAIRS, measure_apart

HERE = Path(__file__).parent


def one_gene_row(pair: str) -> str:
    return next(label for label in EDGE_PAIRS[pair][2] if label.startswith("hkt (one stage gene"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--out", default=str(HERE / "results" / "edge_rounds"))
    args = ap.parse_args()
    rounds: dict[str, list[dict]] = {pair: [] for pair in EDGE_PAIRS}
    for k in range(args.rounds):
        for pair in EDGE_PAIRS:
            kd = measure_apart(pair, "kd", args.batch, args.size, args.steps)
            hkt = measure_apart(pair, one_gene_row(pair), args.batch, args.size, args.steps)
            t_kd = kd["median_step_s"]
            floor = (t_kd + hkt["child_after_gene_s"] + hkt["parent_after_gene_s"]) / t_kd
            rounds[pair].append(
                {
                    "round": k,
                    "kd_s": t_kd,
                    "hkt_s": hkt["median_step_s"],
                    "engine": hkt["engine"],
                    "time_vs_kd": hkt["median_step_s"] / t_kd,
                    "floor_vs_kd": floor,
                    "floor_and_mixes_vs_kd": floor + hkt["mixes_s"] / t_kd,
                }
            )
            print(pair, rounds[pair][-1], flush=True)
    reference = next(iter(EDGE_PAIRS))  # ResNet-18
    ref_median = statistics.median(r["time_vs_kd"] for r in rounds[reference])
    rows = []
    for pair, rs in rounds.items():
        ratios = [r["time_vs_kd"] for r in rs]
        rows.append(
            {
                "pair": pair,
                "method": one_gene_row(pair),
                "engines": sorted({r["engine"] for r in rs}),
                "time_vs_kd_per_round": ratios,
                "time_vs_kd_median": statistics.median(ratios),
                "floor_and_mixes_vs_kd_median": statistics.median(r["floor_and_mixes_vs_kd"] for r in rs),
                "vs_resnet18": statistics.median(ratios) / ref_median,
            }
        )
    command = f"python benchmarks/edge_rounds.py --rounds {args.rounds} --steps {args.steps}"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"command": command, "threads": torch.get_num_threads(), "torch": torch.__version__, "rounds": rounds, "rows": rows}
    out.with_suffix(".json").write_text(json.dumps(record, indent=1))
    lines = [
        f"# Edge children, one stage gene, {args.rounds} alternating rounds (batch {args.batch}, {args.size} px)",
        "",
        f"`{command}` on {torch.get_num_threads()} CPU threads, torch {torch.__version__}; each ratio is the HKT step's median "
        f"over {args.steps} steps divided by KD's on the same child in the same round.",
        "",
        "| pair | method | engine | time vs kd, per round | median | floor + mixes vs kd (median) | median vs ResNet-18's |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        per_round = ", ".join(f"{x:.2f}x" for x in r["time_vs_kd_per_round"])
        lines.append(
            f"| {r['pair']} | {r['method']} | {', '.join(r['engines'])} | {per_round} | {r['time_vs_kd_median']:.2f}x | "
            f"{r['floor_and_mixes_vs_kd_median']:.2f}x | {r['vs_resnet18']:.2f} |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
