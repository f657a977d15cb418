"""Summary of a comparison grid: mean ± std per method, paired differences against ``ce`` and ``kd`` with
paired t-tests, the HKT loss terms and gates, and plots. Works on any scalar metric with a direction."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from hkt.io import savefig, write_atomic


def load_records(out_dir: str | Path) -> dict[str, dict[int, dict[str, Any]]]:
    """``{method: {seed: record}}`` from ``out_dir/runs/<method>/seed<k>.json``."""
    records: dict[str, dict[int, dict[str, Any]]] = {}
    for path in sorted(Path(out_dir, "runs").glob("*/seed*.json")):
        records.setdefault(path.parent.name, {})[int(path.stem[4:])] = json.loads(path.read_text())
    return records


def _ms(values: list[float], scale: float, digits: int = 2) -> str:
    if not values:
        return "–"
    mean = statistics.mean(values) * scale
    std = statistics.stdev(values) * scale if len(values) > 1 else float("nan")
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def paired(a: dict[int, float], b: dict[int, float]) -> dict[str, Any] | None:
    """Paired difference ``a - b`` over the seeds both have, with a two-sided paired t-test."""
    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        return None
    from scipy.stats import ttest_rel

    diffs = [a[s] - b[s] for s in seeds]
    p = float(ttest_rel([a[s] for s in seeds], [b[s] for s in seeds]).pvalue) if len(set(diffs)) > 1 else float("nan")
    return {"n": len(seeds), "mean_diff": statistics.mean(diffs), "std_diff": statistics.stdev(diffs), "p_value": p}


def _scale(key: str) -> tuple[float, str]:
    """Accuracies are shown in %, other metrics (Dice, IoU, EPE) as they are."""
    return (100.0, " (%)") if key.endswith("acc") else (1.0, "")


def _rows(
    records: dict[str, dict[int, dict[str, Any]]], test: dict[str, dict[int, float]], key: str, val_key: str
) -> list[dict[str, Any]]:
    """One table row per method; ``test`` is ``{method: {seed: value of key}}``."""
    order = list(test)
    rows = []
    for m in order:
        recs = list(records[m].values())
        rows.append({
            "method": m,
            "seeds": sorted(records[m]),
            "test": list(test[m].values()),
            "val": [r[val_key] for r in recs if r.get(val_key) is not None],
            "test_last_epoch": [r.get(f"{key}_last_epoch") for r in recs if r.get(f"{key}_last_epoch") is not None],
            "wall_s": [r["fit_wall_s"] for r in recs],
            "median_step_s": [r["median_step_s"] for r in recs if r.get("median_step_s")],
            "vs_ce": paired(test[m], test["ce"]) if "ce" in test and m != "ce" else None,
            "vs_kd": paired(test[m], test["kd"]) if "kd" in test and m != "kd" else None,
        })
    return rows


def summarize(grid: dict[str, Any]) -> dict[str, Any]:
    """Write ``summary.md``, ``summary.json`` and plots into ``grid['out_dir']``; return the summary.

    ``grid['metric']['test']`` is one record key or a list of them (e.g. liver and tumour Dice): each gets its
    own table and verdicts. ``metric['val']`` is the validation metric that selected the checkpoint."""
    out = Path(grid["out_dir"])
    metric = grid["metric"]
    keys = metric["test"] if isinstance(metric["test"], list) else [metric["test"]]
    sign = 1 if metric["higher_is_better"] else -1
    val_key = f"{metric['val'].replace('/', '_')}_best"
    records = load_records(out)
    order = [m for m in grid["methods"] if m in records]
    lines = [
        f"# {grid.get('name', out.name)}: {', '.join(keys)}, validation-selected epoch, mean ± std over seeds",
        "",
        *([grid["notes"].strip(), ""] if grid.get("notes") else []),
        f"{'Higher' if sign > 0 else 'Lower'} is better. Checkpoints are selected on `{metric['val']}`. Paired differences use "
        "the same seeds (same data order, same starting weights); p: two-sided paired t-test (scipy). With 3 to 5 seeds "
        "a p-value is weak evidence either way.",
    ]
    by_metric = {}
    for key in keys:
        scale, unit = _scale(key)
        digits = 2 if scale == 100.0 else 3
        test = {m: {s: r[key] for s, r in records[m].items()} for m in order}
        rows = by_metric[key] = _rows(records, test, key, val_key)
        vscale, vunit = _scale(val_key.removesuffix("_best"))
        lines += [
            "",
            f"## {key}{unit}",
            "",
            f"| method | seeds | test{unit} | {metric['val']}{vunit} | last-epoch test{unit} | vs ce | p | vs kd | p | step (s) | wall (s) |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]

        def diff(d: dict[str, Any] | None) -> tuple[str, str]:
            if d is None:
                return "–", "–"
            return f"{d['mean_diff'] * scale:+.{digits}f} ± {d['std_diff'] * scale:.{digits}f}", _p(d['p_value'])

        for r in rows:
            dce, pce = diff(r["vs_ce"])
            dkd, pkd = diff(r["vs_kd"])
            step = f"{statistics.median(r['median_step_s']):.3f}" if r["median_step_s"] else "–"
            lines.append(
                f"| {r['method']} | {len(r['seeds'])} | {_ms(r['test'], scale, digits)} | {_ms(r['val'], vscale, digits)} | "
                f"{_ms(r['test_last_epoch'], scale, digits)} | {dce} | {pce} | {dkd} | {pkd} | {step} | {statistics.mean(r['wall_s']):.0f} |"
            )
        lines += ["", *_verdicts(rows, sign, scale, digits, key), *_extra_pairs(grid, test, scale, digits)]
    lines += ["", *_hkt_diagnostics(records, order)]
    lines += ["", "Plots: `val_curves.png` (validation metric per epoch, band = ± std over seeds), `gates.png` (mean inheritance rate per gene, HKT runs)."]
    write_atomic(out / "summary.md", "\n".join(lines) + "\n")
    summary = {"metric": metric, "by_metric": by_metric}
    write_atomic(out / "summary.json", json.dumps(summary, indent=1))
    _plots(records, order, grid, out)
    return summary


def _verdicts(rows: list[dict[str, Any]], sign: int, scale: float, digits: int, key: str) -> list[str]:
    lines = [f"### Does HKT beat `ce` and `kd` on {key}?", ""]
    for r in rows:
        if not r["method"].startswith("hkt"):
            continue
        for ref in ("ce", "kd"):
            d = r[f"vs_{ref}"]
            if d is None:
                continue
            better = sign * d["mean_diff"] > 0
            significant = d["p_value"] < 0.05
            verdict = (
                ("beats" if better else "loses to") + f" `{ref}`" + (" (p < 0.05)" if significant else " but not significantly (p ≥ 0.05)")
                if d["mean_diff"] != 0
                else f"ties `{ref}`"
            )
            lines.append(f"- `{r['method']}` {verdict}: {d['mean_diff'] * scale:+.{digits}f} over {d['n']} paired seeds, p {'' if d['p_value'] < 0.001 else '= '}{_p(d['p_value'])}.")
    return lines


def _extra_pairs(grid: dict[str, Any], test: dict[str, dict[int, float]], scale: float, digits: int) -> list[str]:
    """Paired comparisons the grid asks for (``pairs: [[a, b], ...]``), e.g. two runs at another lr."""
    lines = []
    for a, b in grid.get("pairs", []):
        d = paired(test.get(a, {}), test.get(b, {}))
        if d is not None:
            lines.append(f"- `{a}` vs `{b}`: {d['mean_diff'] * scale:+.{digits}f} ± {d['std_diff'] * scale:.{digits}f} over {d['n']} paired seeds, p {'' if d['p_value'] < 0.001 else '= '}{_p(d['p_value'])}.")
    return ["", "Other paired comparisons:", "", *lines] if lines else []


def _hkt_diagnostics(records: dict[str, dict[int, dict[str, Any]]], order: list[str]) -> list[str]:
    """Last-epoch loss terms and gates of HKT runs, mean over seeds: what the method was actually doing."""
    lines = ["## HKT diagnostics (last epoch, mean over seeds)", "", "| method | loss terms | mean gate per gene |", "|---|---|---|"]
    found = False
    for m in order:
        last = [r["epochs"][-1] for r in records[m].values() if r.get("epochs")]
        terms = sorted({k for e in last for k in e if k.startswith("train/") and k != "train/loss"})
        gates = sorted({k for e in last for k in e if k.startswith("gate/")})
        if not gates:
            continue
        found = True
        t = ", ".join(f"{k[6:]} {statistics.mean(e[k] for e in last if k in e):.3f}" for k in terms)
        g = ", ".join(f"{k[5:]} {statistics.mean(e[k] for e in last if k in e):.3f}" for k in gates)
        lines.append(f"| {m} | {t} | {g} |")
    return lines if found else []


def _series(records: dict[int, dict[str, Any]], key: str) -> "Any":
    """``(seeds, epochs)`` array of ``key`` over the epochs all seeds have (``None`` when absent)."""
    import numpy as np

    curves = [[e[key] for e in r["epochs"] if key in e] for r in records.values()]
    n = min(len(c) for c in curves)
    return np.array([c[:n] for c in curves]) if n else None


def _plots(records: dict[str, dict[int, dict[str, Any]]], order: list[str], grid: dict[str, Any], out: Path) -> None:
    """Curves over epochs with a ± std band; bars with ± std error bars when the budget is one epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    def draw(series: list[tuple[str, Any]], ylabel: str, path: Path) -> None:
        series = [(label, a) for label, a in series if a is not None]
        if not series:
            return
        fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
        if max(a.shape[1] for _, a in series) == 1:
            ax.bar(range(len(series)), [a.mean() for _, a in series], yerr=[a.std() for _, a in series], capsize=3)
            ax.set_xticks(range(len(series)), [label for label, _ in series], rotation=40, ha="right", fontsize=7)
            lo = min(a.mean() - a.std() for _, a in series)
            hi = max(a.mean() + a.std() for _, a in series)
            ax.set_ylim(max(0.0, lo - 0.1 * (hi - lo + 1e-3)), hi + 0.1 * (hi - lo + 1e-3))
        else:
            for label, a in series:
                x = np.arange(1, a.shape[1] + 1)
                ax.plot(x, a.mean(0), marker="o", label=label)
                ax.fill_between(x, a.mean(0) - a.std(0), a.mean(0) + a.std(0), alpha=0.2)
            ax.set_xticks(np.arange(1, max(a.shape[1] for _, a in series) + 1))
            ax.set_xlabel("epoch")
            ax.legend(fontsize=6)
        ax.set_ylabel(ylabel)
        fig.tight_layout()
        savefig(fig, path)
        plt.close(fig)

    val_key = grid["metric"]["val"]
    draw([(m, _series(records[m], val_key)) for m in order], f"{val_key} (mean ± std over seeds)", out / "val_curves.png")
    gates = []
    for m in order:
        for g in sorted({k for r in records[m].values() for e in r["epochs"] for k in e if k.startswith("gate/")}):
            gates.append((f"{m}: {g[5:]}", _series(records[m], g)))
    draw(gates, "mean inheritance rate g", out / "gates.png")
