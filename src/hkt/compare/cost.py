"""Wall time of each step of comparison grids (prepare, tuning, final runs), summed from their committed records.

    hkt report cost benchmarks/results/evidence_v2_fashion_b1 benchmarks/results/evidence_v2_fashion_b2 \\
        --out benchmarks/results/evidence_v2_cost

Only training time is counted (each record's ``fit_wall_s``: the fit, its validation and checkpointing), not process
start-up, data decoding or the final test pass. Trial records written before trials kept their wall time count as
"not kept". Writes ``cost.md`` and ``cost.json`` into ``out``.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from hkt.compare.records import load_records, trial_records
from hkt.io import write_atomic


def grid_cost(out_dir: Path) -> dict[str, Any]:
    """``{"prepare": {name: s}, "methods": {method: {"trials", "trial_s" (None when not kept), "runs", "run_s",
    "run_mean_s"}}}`` over the methods with final-run records for the grid whose results live in ``out_dir``."""
    prepare = {p.stem: json.loads(p.read_text())["fit_wall_s"] for p in sorted(out_dir.glob("prepare/*.json"))}
    methods: dict[str, Any] = {}
    for method, records in sorted(load_records(out_dir).items()):
        runs = [records[s]["fit_wall_s"] for s in sorted(records)]
        trials = trial_records(out_dir, method)
        kept = [t["fit_wall_s"] for t in trials if "fit_wall_s" in t]
        methods[method] = {
            "trials": len(trials),
            "trial_s": sum(kept) if trials and len(kept) == len(trials) else None,
            "runs": len(runs),
            "run_s": sum(runs),
            "run_mean_s": statistics.mean(runs),
        }
    return {"prepare": prepare, "methods": methods}


def cost_report(grids: list[Path], out: Path) -> str:
    """Write ``cost.md`` and ``cost.json`` for the grids whose results live in ``grids`` (their ``out_dir``s) into
    ``out``; return the markdown. A folder without ``runs/`` is an error naming it."""
    for g in grids:
        if not (g / "runs").is_dir():
            raise FileNotFoundError(f"{g} has no runs/ folder: pass a grid's out_dir (benchmarks/results/<grid>) after it has run")
    costs = {g.name: grid_cost(g) for g in grids}
    lines = [
        "# Wall time per step of the comparison grids (2 CPU cores, training only)",
        "",
        f"`hkt report cost {' '.join(str(g) for g in grids)} --out {out}`; sums of the committed "
        "records' `fit_wall_s` (fit, validation and checkpoints; not start-up, decoding or the final test pass).",
    ]
    for name, c in costs.items():
        prep = ", ".join(f"{k} {v:,.0f} s" for k, v in c["prepare"].items()) or "none in this grid (reuses another grid's)"
        tuned = [m["trial_s"] for m in c["methods"].values() if m["trials"]]
        tuning = f"{sum(tuned):,.0f} s" if tuned and None not in tuned else "not kept (trials recorded before wall times were)"
        final = sum(m["run_s"] for m in c["methods"].values())
        lines += [
            "",
            f"## {name}",
            "",
            f"Prepare: {prep}. Tuning: {tuning}. Final runs: {final:,.0f} s.",
            "",
            "| method | trials | tuning (s) | final runs | final (s) | per final run (s) |",
            "|---|---|---|---|---|---|",
        ]
        for m, v in c["methods"].items():
            t = "–" if v["trial_s"] is None else f"{v['trial_s']:,.0f}"
            lines.append(f"| {m} | {v['trials']} | {t} | {v['runs']} | {v['run_s']:,.0f} | {v['run_mean_s']:.0f} |")
    write_atomic(out / "cost.md", "\n".join(lines) + "\n")
    write_atomic(out / "cost.json", json.dumps(costs, indent=1) + "\n")
    return "\n".join(lines) + "\n"
