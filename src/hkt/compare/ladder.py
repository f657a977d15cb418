"""Budget ladder: the same methods at growing training budgets, one comparison grid per budget.

Reads only what the grids committed (each ``out_dir``'s per-run records and ``summary.json``), so it rebuilds
byte for byte. The budget of a grid is the number of training images its runs saw (train split size x epochs),
read from the records, so the x axis cannot disagree with what ran.

    hkt report ladder --out benchmarks/results/evidence_v2_ladder \\
        fashion_mnist=benchmarks/results/evidence_v2_fashion_b1,benchmarks/results/evidence_v2_fashion_b2
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from hkt.compare.format import difference, mean_std, p_value, scale_of
from hkt.compare.records import load_records
from hkt.compare.summary import REFERENCES
from hkt.io import savefig, write_atomic


def budget(out_dir: str | Path) -> int:
    """Training images seen by every run of the grid in ``out_dir`` (train split size x epochs).

    Raises ``ValueError`` when the grid has no records or its runs saw different budgets."""
    records = load_records(out_dir)
    seen = {r["data"]["sizes"]["train"] * r["config"]["trainer"]["max_epochs"] for m in records.values() for r in m.values()}
    if len(seen) != 1:
        raise ValueError(
            f"{out_dir}: expected one training budget over its runs, found {sorted(seen) or 'no runs'}; "
            "a ladder step is one finished grid (hkt compare -c <grid>.yaml)"
        )
    return seen.pop()


def rung(out_dir: str | Path, key: str) -> dict[str, Any]:
    """One budget: ``{"grid", "budget", "rows": {method: summary row of metric key}}`` from ``out_dir``."""
    path = Path(out_dir, "summary.json")
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run (or --summarize-only) that grid's hkt compare first")
    by_metric = json.loads(path.read_text())["by_metric"]
    if key not in by_metric:
        raise ValueError(f"{path} has no metric {key!r} (it has {sorted(by_metric)}); pass --metric with one of them")
    rows = by_metric[key]["rows"]
    return {"grid": Path(out_dir).name, "budget": budget(out_dir), "rows": {r["method"]: r for r in rows}}


def ladder(panels: dict[str, list[str]], out: str | Path, key: str = "test_acc") -> dict[str, Any]:
    """Write ``ladder.md``, ``ladder.json`` and ``ladder.png`` (per dataset column: test metric vs budget, mean ±
    std over seeds, and the paired difference vs ``ce`` with its 95% CI) into ``out``; ``panels`` maps a panel
    title to its grids' ``out_dir``s. Returns what ``ladder.json`` holds."""
    scale, unit = scale_of(key)
    digits = 2 if scale == 100.0 else 3
    data = {title: sorted((rung(d, key) for d in dirs), key=lambda r: r["budget"]) for title, dirs in panels.items()}
    lines = [
        f"# Budget ladder: {key}{unit} vs training budget (images seen), mean ± std over seeds",
        "",
        "Each budget is its own grid, with its own equal-budget tuning; differences are paired over the same seeds "
        "with their 95% CI, and p is Holm-adjusted within that budget's grid (see each grid's summary.md). "
        '"Beats" / "loses to" only where the Holm-adjusted p < 0.05.',
    ]
    for title, rungs in data.items():
        lines += [
            "",
            f"## {title}",
            "",
            "| method | budget (images) | grid | test | vs ce | vs kd | vs dkd |",
            "|---|---|---|---|---|---|---|",
        ]
        methods = list(dict.fromkeys(m for r in rungs for m in r["rows"]))
        for m in methods:
            for r in rungs:
                if m not in r["rows"]:
                    continue
                row = r["rows"][m]
                cells = []
                for ref in REFERENCES:
                    d = row.get(f"vs_{ref}")
                    cells.append("–" if d is None else f"{difference(d, scale, digits)[0]}, Holm p {p_value(d['p_holm'])}")
                lines.append(
                    f"| {m} | {r['budget']:,} | {r['grid']} | {mean_std(row['test'], scale, digits)} | " + " | ".join(cells) + " |"
                )
    lines += [
        "",
        "Plot: `ladder.png`, methods run at more than one budget: test metric (error bars ± std over seeds) and "
        "the paired difference vs `ce` (error bars: 95% CI).",
    ]
    out = Path(out)
    write_atomic(out / "ladder.md", "\n".join(lines) + "\n")
    summary = {
        "metric": key,
        "sources": panels,  # what rebuilds this ladder: hkt report ladder TITLE=DIR,DIR ... --out
        "panels": {
            t: [{"grid": r["grid"], "budget": r["budget"], "test": {m: row["test"] for m, row in r["rows"].items()}} for r in rungs]
            for t, rungs in data.items()
        },
    }
    write_atomic(out / "ladder.json", json.dumps(summary, indent=1) + "\n")
    _plot(data, out / "ladder.png", f"{key}{unit}", scale)
    return summary


def _plot(data: dict[str, list[dict[str, Any]]], path: Path, ylabel: str, scale: float) -> None:
    """Top: mean ± std over seeds; bottom: paired difference vs ``ce`` with its 95% CI. Only methods run at more
    than one budget are drawn (the others are in ladder.md), so the axes show the differences that matter."""
    fig = Figure(figsize=(4.4 * len(data), 6.0), dpi=100)
    axes = fig.subplots(2, len(data), squeeze=False, sharex="col")
    for col, (title, rungs) in enumerate(data.items()):
        methods = [m for m in dict.fromkeys(m for r in rungs for m in r["rows"]) if sum(m in r["rows"] for r in rungs) > 1]
        top, bottom = axes[0][col], axes[1][col]
        for i, m in enumerate(methods):
            pts = [(r["budget"], r["rows"][m]) for r in rungs if m in r["rows"]]
            x = [b * (1 + 0.02 * (i - len(methods) / 2)) for b, _ in pts]  # dodge so error bars stay readable
            y = [statistics.mean(row["test"]) * scale for _, row in pts]
            e = [statistics.stdev(row["test"]) * scale if len(row["test"]) > 1 else 0.0 for _, row in pts]
            style = {"marker": "o", "markersize": 3, "capsize": 2, "linewidth": 1, "label": m, "color": f"C{i}"}
            top.errorbar(x, y, yerr=e, **style)
            diffs = [(xi, row["vs_ce"]) for xi, (_, row) in zip(x, pts) if row.get("vs_ce")]
            if diffs:
                d = [v["mean_diff"] * scale for _, v in diffs]
                lo = [v["mean_diff"] * scale - v["ci95"][0] * scale for _, v in diffs]
                hi = [v["ci95"][1] * scale - v["mean_diff"] * scale for _, v in diffs]
                bottom.errorbar([xi for xi, _ in diffs], d, yerr=[lo, hi], **style)
        bottom.axhline(0.0, color="0.5", linewidth=0.8)
        top.set_title(title, fontsize=9)
        top.set_ylabel(f"{ylabel}, mean ± std")
        bottom.set_ylabel("vs ce: paired diff, 95% CI")
        top.legend(fontsize=6)
        for ax in (top, bottom):
            ax.set_xscale("log")
            ax.set_xticks([r["budget"] for r in rungs], [f"{r['budget'] // 1000}k" for r in rungs])
            ax.minorticks_off()
        bottom.set_xlabel("training images seen")
    fig.tight_layout()
    savefig(fig, path)
