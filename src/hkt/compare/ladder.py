"""Budget ladder: the same methods at growing training budgets, one comparison grid per budget.

Reads only what the grids committed (each ``out_dir``'s per-run records and ``summary.json``), so it rebuilds
byte for byte. The budget of a grid is the number of training images its runs saw (train split size x epochs),
read from the records, so the x axis cannot disagree with what ran.

    python -m hkt.compare.ladder --out benchmarks/results/evidence_v2_ladder \\
        fashion_mnist=benchmarks/results/evidence_v2_fashion_b1,benchmarks/results/evidence_v2_fashion_b2
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from hkt.compare.summary import REFERENCES, _diff, _ms, _p, _scale, load_records
from hkt.io import savefig, write_atomic


def budget(out_dir: str | Path) -> int:
    """Training images seen by every run of the grid in ``out_dir`` (train split size x epochs).

    Raises ``ValueError`` when the grid has no records or its runs saw different budgets."""
    records = load_records(out_dir)
    seen = {r["data"]["sizes"]["train"] * r["config"]["trainer"]["max_epochs"] for m in records.values() for r in m.values()}
    if len(seen) != 1:
        raise ValueError(f"{out_dir}: expected one training budget over its runs, found {sorted(seen) or 'no runs'}; "
                         "a ladder step is one finished grid (hkt compare -c <grid>.yaml)")
    return seen.pop()


def rung(out_dir: str | Path, key: str) -> dict[str, Any]:
    """One budget: ``{"grid", "budget", "rows": {method: summary row of metric key}}`` from ``out_dir``."""
    path = Path(out_dir, "summary.json")
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run (or --summarize-only) that grid's hkt compare first")
    rows = json.loads(path.read_text())["by_metric"][key]["rows"]
    return {"grid": Path(out_dir).name, "budget": budget(out_dir), "rows": {r["method"]: r for r in rows}}


def ladder(panels: dict[str, list[str]], out: str | Path, key: str = "test_acc") -> dict[str, Any]:
    """Write ``ladder.md``, ``ladder.json`` and ``ladder.png`` (test metric vs budget, mean ± std over seeds,
    one panel per dataset) into ``out``; ``panels`` maps a panel title to its grids' ``out_dir``s."""
    scale, unit = _scale(key)
    digits = 2 if scale == 100.0 else 3
    data = {title: sorted((rung(d, key) for d in dirs), key=lambda r: r["budget"]) for title, dirs in panels.items()}
    lines = [
        f"# Budget ladder: {key}{unit} vs training budget (images seen), mean ± std over seeds",
        "",
        "Each budget is its own grid, with its own equal-budget tuning; differences are paired over the same seeds "
        "with their 95% CI, and p is Holm-adjusted within that budget's grid (see each grid's summary.md). "
        "\"Beats\" / \"loses to\" only where the Holm-adjusted p < 0.05.",
    ]
    for title, rungs in data.items():
        lines += ["", f"## {title}", "", "| method | budget (images) | grid | test | vs ce | vs kd | vs dkd |", "|---|---|---|---|---|---|---|"]
        methods = list(dict.fromkeys(m for r in rungs for m in r["rows"]))
        for m in methods:
            for r in rungs:
                if m not in r["rows"]:
                    continue
                row = r["rows"][m]
                cells = []
                for ref in REFERENCES:
                    d = row.get(f"vs_{ref}")
                    cells.append("–" if d is None else f"{_diff(d, scale, digits)[0]}, Holm p {_p(d['p_holm'])}")
                lines.append(f"| {m} | {r['budget']:,} | {r['grid']} | {_ms(row['test'], scale, digits)} | " + " | ".join(cells) + " |")
    lines += ["", "Plot: `ladder.png` (error bars = ± std over seeds; methods absent from a budget have no point there)."]
    out = Path(out)
    write_atomic(out / "ladder.md", "\n".join(lines) + "\n")
    summary = {
        "metric": key,
        "sources": panels,  # what rebuilds this ladder: python -m hkt.compare.ladder TITLE=DIR,DIR ... --out
        "panels": {t: [{"grid": r["grid"], "budget": r["budget"], "test": {m: row["test"] for m, row in r["rows"].items()}}
                       for r in rungs] for t, rungs in data.items()},
    }
    write_atomic(out / "ladder.json", json.dumps(summary, indent=1) + "\n")
    _plot(data, out / "ladder.png", f"{key}{unit}", scale)
    return summary


def _plot(data: dict[str, list[dict[str, Any]]], path: Path, ylabel: str, scale: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(data), figsize=(4.2 * len(data), 3.6), dpi=100, squeeze=False)
    for ax, (title, rungs) in zip(axes[0], data.items()):
        methods = list(dict.fromkeys(m for r in rungs for m in r["rows"]))
        for i, m in enumerate(methods):
            pts = [(r["budget"], r["rows"][m]["test"]) for r in rungs if m in r["rows"]]
            x = [b * (1 + 0.015 * (i - len(methods) / 2)) for b, _ in pts]  # dodge so error bars stay readable
            y = [statistics.mean(v) * scale for _, v in pts]
            e = [statistics.stdev(v) * scale if len(v) > 1 else 0.0 for _, v in pts]
            ax.errorbar(x, y, yerr=e, marker="o", markersize=3, capsize=2, linewidth=1, label=m)
        ax.set_xscale("log")
        ax.set_xticks([r["budget"] for r in rungs], [f"{r['budget'] // 1000}k" for r in rungs])
        ax.minorticks_off()
        ax.set_xlabel("training images seen")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=6)
    fig.tight_layout()
    savefig(fig, path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("panels", nargs="+", metavar="TITLE=DIR,DIR", help="a panel title and its grids' out_dirs")
    parser.add_argument("--out", required=True, help="folder for ladder.md / ladder.json / ladder.png")
    parser.add_argument("--metric", default="test_acc")
    args = parser.parse_args(argv)
    panels = {}
    for spec in args.panels:
        title, sep, dirs = spec.partition("=")
        if not sep or not dirs:
            parser.error(f"{spec!r}: expected TITLE=DIR[,DIR...], e.g. fashion_mnist=benchmarks/results/evidence_v2_fashion_b1")
        panels[title] = dirs.split(",")
    ladder(panels, args.out, args.metric)


if __name__ == "__main__":
    main()
