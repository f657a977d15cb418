"""Summary of a comparison grid: mean ± std per method; paired differences against the references (``ce``,
``kd``, ``dkd``, when in the grid) with 95% confidence intervals, paired t-tests and Holm-adjusted p-values over
all the comparisons of the summary; the searched settings and trial table; the HKT loss terms and gates; plots.
Works on any scalar metric with a direction, and only on the committed records (``out_dir/runs``,
``out_dir/search``), so ``hkt compare --summarize-only`` rebuilds it byte for byte."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from scipy.stats import t as student_t
from scipy.stats import ttest_rel

from hkt.compare.format import bound, difference, mean_std, p_value, scale_of, settings, verdict
from hkt.compare.records import chosen, load_records, parent_weights, trial_records, unhashed
from hkt.compare.sampler import SAMPLERS
from hkt.io import savefig, write_atomic

REFERENCES = ("ce", "kd", "dkd")  # what every other method is compared with, when the grid has it


def paired(a: dict[int, float], b: dict[int, float]) -> dict[str, Any] | None:
    """Paired difference ``a - b`` over the seeds both have: mean, std, 95% t confidence interval, two-sided
    paired t-test p (``nan`` when every difference is the same)."""
    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        return None
    diffs = [a[s] - b[s] for s in seeds]
    mean, sd, n = statistics.mean(diffs), statistics.stdev(diffs), len(seeds)
    half = float(student_t.ppf(0.975, n - 1)) * sd / n**0.5
    p = float(ttest_rel([a[s] for s in seeds], [b[s] for s in seeds]).pvalue) if len(set(diffs)) > 1 else float("nan")
    return {"n": n, "mean_diff": mean, "std_diff": sd, "ci95": [mean - half, mean + half], "p_value": p}


def holm(pvalues: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order; ``nan`` stays ``nan`` and is not counted."""
    finite = sorted((p, i) for i, p in enumerate(pvalues) if p == p)
    adjusted = [float("nan")] * len(pvalues)
    running, m = 0.0, len(finite)
    for rank, (p, i) in enumerate(finite):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def _repeats(trials: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """``(trial, earlier trial with the same settings)`` for every repeated candidate."""
    first: dict[str, int] = {}
    out = []
    for t in trials:
        key = json.dumps(t["params"], sort_keys=True)
        if key in first:
            out.append((t["trial"], first[key]))
        else:
            first[key] = t["trial"]
    return out


def _rows(records: dict[str, dict[int, dict[str, Any]]], test: dict[str, dict[int, float]], key: str, val_key: str) -> list[dict[str, Any]]:
    """One table row per method; ``test`` is ``{method: {seed: value of key}}``."""
    rows = []
    for m in test:
        recs = [records[m][s] for s in sorted(records[m])]
        rows.append(
            {
                "method": m,
                "seeds": sorted(records[m]),
                "test": [test[m][s] for s in sorted(test[m])],
                "val": [r[val_key] for r in recs if r.get(val_key) is not None],
                "test_last_epoch": [r.get(f"{key}_last_epoch") for r in recs if r.get(f"{key}_last_epoch") is not None],
                "wall_s": [r["fit_wall_s"] for r in recs],
                "median_step_s": [r["median_step_s"] for r in recs if r.get("median_step_s")],
                # while training (child + adapters, GA, ReviewKD's ABF, ...) and shipped (the child alone)
                "trainable_params": [r["trainable_params"] for r in recs if "trainable_params" in r],
                "deployed_params": [r["child_params"] for r in recs if "child_params" in r],
                # only with the parent cache, so that summaries of grids run without it rebuild unchanged
                **(
                    {"parent_saved_s": saved}
                    if (saved := [r["parent_cache"]["saved_s"] for r in recs if "saved_s" in r.get("parent_cache", {})])
                    else {}
                ),
                **{f"vs_{ref}": paired(test[m], test[ref]) if ref in test and m != ref else None for ref in REFERENCES},
            }
        )
    return rows


def _adjust(rows: list[dict[str, Any]], extra: list[dict[str, Any]]) -> int:
    """Holm over the distinct comparisons of one metric's summary (methods x references, plus extra pairs); a pair and
    its mirror (``kd`` vs ``ce``, ``ce`` vs ``kd``: the same test) are one comparison and share one adjusted p.
    Returns the size of the family."""
    family: dict[frozenset[str], list[dict[str, Any]]] = {}
    for r in rows:
        for ref in REFERENCES:
            if d := r.get(f"vs_{ref}"):
                family.setdefault(frozenset((r["method"], ref)), []).append(d)
    for d in extra:
        family.setdefault(frozenset((d["a"], d["b"])), []).append(d)
    groups = list(family.values())
    for group, adj in zip(groups, holm([g[0]["p_value"] for g in groups])):
        for d in group:
            d["p_holm"] = adj
    return len(groups)


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
        f"{'Higher' if sign > 0 else 'Lower'} is better. Checkpoints are selected on `{metric['val']}`; the test split is "
        "evaluated once per final run. Differences are paired over the same seeds (same data order, same starting "
        "weights), shown with their 95% t confidence interval; p: two-sided paired t-test (scipy), in brackets Holm-"
        "adjusted over the distinct comparisons of the table and the extra pairs (a pair and its mirror counted once). "
        '"Beats" / "loses to" only where the '
        "Holm-adjusted p < 0.05.",
    ]
    lines += _prepare_section(grid, out, keys)
    search = _search_section(grid, out, order)
    lines += search["lines"]
    by_metric = {}
    for key in keys:
        section, by_metric[key] = _metric_section(grid, records, order, key, val_key)
        lines += section
    if parents := parent_weights(grid):  # raises when one parent spec was read with two contents
        lines += [
            "",
            "Parent weights, by content (hash of every tensor, from the records that name it): "
            + "; ".join(f"{_parent_name(spec)}: {', '.join(h[:12] for h in hashes)}" for spec, hashes in parents.items())
            + ".",
        ]
    if missing := unhashed(grid):
        lines += [
            "",
            f"Records that read a parent but do not name its weights (written before records named them; their parent rests on "
            f"the grid's spec): {len(missing)}, {_grouped(missing)}.",
        ]
    lines += ["", *_hkt_diagnostics(records, order)]
    if any(r.get("epochs") for m in order for r in records[m].values()):
        lines += [
            "",
            "Plots: `val_curves.png` (validation metric per epoch, band = ± std over seeds), `gates.png` (mean inheritance rate "
            "per gene, HKT runs).",
        ]
    write_atomic(out / "summary.md", "\n".join(lines) + "\n")
    summary = {"metric": metric, "by_metric": by_metric, **({"search": search["json"]} if search["json"] else {})}
    write_atomic(out / "summary.json", json.dumps(summary, indent=1) + "\n")
    _plots(records, order, grid, out)
    return summary


def _grouped(names: list[str]) -> str:
    """``runs/kd/seed0, runs/kd/seed1, search/kd/trial3`` as ``runs/kd/seed 0-1, search/kd/trial 3``."""
    groups: dict[str, list[int]] = {}
    for name in names:
        head, _, last = name.rpartition("/")
        stem = last.rstrip("0123456789")
        groups.setdefault(f"{head}/{stem}", []).append(int(last[len(stem) :]))
    out = []
    for group, numbers in groups.items():
        numbers, spans = sorted(numbers), []
        for n in numbers:
            if spans and n == spans[-1][1] + 1:
                spans[-1][1] = n
            else:
                spans.append([n, n])
        out.append(f"{group} {', '.join(str(a) if a == b else f'{a}-{b}' for a, b in spans)}")
    return "; ".join(out)


def _parent_name(spec: str) -> str:
    parent = json.loads(spec)
    return f"`{parent.get('arch')}` ({parent.get('weights') or 'random initialisation'})"


def _metric_section(
    grid: dict[str, Any], records: dict[str, dict[int, dict[str, Any]]], order: list[str], key: str, val_key: str
) -> tuple[list[str], dict[str, Any]]:
    """One test metric's table, verdicts and extra pairs, and its ``summary.json`` entry."""
    sign = 1 if grid["metric"]["higher_is_better"] else -1
    refs = [r for r in REFERENCES if r in order]
    scale, unit = scale_of(key)
    digits = 2 if scale == 100.0 else 3
    test = {m: {s: r[key] for s, r in records[m].items()} for m in order}
    rows = _rows(records, test, key, val_key)
    extra = [dict(d, a=a, b=b) for a, b in grid.get("pairs", []) if (d := paired(test.get(a, {}), test.get(b, {})))]
    family = _adjust(rows, extra)
    lines = ["", f"## {key}{unit}", "", *_table(rows, refs, grid["metric"]["val"], val_key, unit, scale, digits)]
    lines += ["", *_verdicts(rows, refs, sign, scale, digits, key, family), *_extra_pairs(extra, sign, scale, digits)]
    return lines, {"rows": rows, "extra_pairs": extra}


def _table(rows: list[dict[str, Any]], refs: list[str], val: str, val_key: str, unit: str, scale: float, digits: int) -> list[str]:
    """The method table: test, validation and last-epoch test (mean ± std), the paired differences against each
    reference, step and wall time, parameters while training and deployed, and the parent compute saved when the
    grid ran with the parent cache."""
    vscale, vunit = scale_of(val_key.removesuffix("_best"))
    head = "".join(f" vs {r} (95% CI) | p (Holm) |" for r in refs)
    cached = any(r.get("parent_saved_s") for r in rows)  # a column only for grids run with the parent cache
    lines = [
        f"| method | seeds | test{unit} | {val}{vunit} | last-epoch test{unit} |{head} step (s) | wall (s) | trainable params |"
        " deployed params |" + (" parent compute saved (s) |" if cached else ""),
        "|---|---|---|---|---|" + "---|---|" * len(refs) + "---|---|---|---|" + ("---|" if cached else ""),
    ]
    for r in rows:
        cells = "".join(f" {d} | {p} |" for d, p in (difference(r[f"vs_{ref}"], scale, digits) for ref in refs))
        step = f"{statistics.median(r['median_step_s']):.3f}" if r["median_step_s"] else "–"
        saved = (f" {statistics.mean(r['parent_saved_s']):.0f} |" if r.get("parent_saved_s") else " – |") if cached else ""
        lines.append(
            f"| {r['method']} | {len(r['seeds'])} | {mean_std(r['test'], scale, digits)} | {mean_std(r['val'], vscale, digits)} | "
            f"{mean_std(r['test_last_epoch'], scale, digits)} |{cells} {step} | {statistics.mean(r['wall_s']):.0f} | "
            f"{_count(r['trainable_params'])} | {_count(r['deployed_params'])} |{saved}"
        )
    return lines + (["", _cache_line(rows)] if cached else [])


def _count(values: list[int]) -> str:
    """A parameter count (the same for every seed of a method), or a range when seeds differ; "–" when not kept."""
    return "–" if not values else f"{min(values):,}" if min(values) == max(values) else f"{min(values):,}–{max(values):,}"


def _cache_line(rows: list[dict[str, Any]]) -> str:
    """Wall time and parent compute saved over the final runs of the table."""
    wall = sum(sum(r["wall_s"]) for r in rows)
    saved = sum(sum(r.get("parent_saved_s", [])) for r in rows)
    return (
        f"Parent cache (`parent_cache`): wall (s) and parent compute saved (s) are means per run; over the "
        f"{sum(len(r['wall_s']) for r in rows)} "
        f"final runs the wall time is {wall:,.0f} s and the parent compute the cache saved {saved:,.0f} s (the seconds the "
        "parent took when each hit's shard was written, less the time to read it; for `hkt`, an upper bound: the parent's "
        "layers after its last gene still run)."
    )


def _prepare_section(grid: dict[str, Any], out: Path, keys: list[str]) -> list[str]:
    """The starting points (``out_dir/prepare/<name>.json``): validation metric per epoch, so a reader can see
    whether parent and base had plateaued before any method started from them."""
    paths = sorted(Path(out, "prepare").glob("*.json"))
    records = [(p.stem, json.loads(p.read_text())) for p in paths]
    records = [(name, r) for name, r in records if r.get("epochs")]
    if not records:
        return []
    val = grid["metric"]["val"]
    vscale, vunit = scale_of(val)
    lines = [
        "",
        "## Starting points (prepare runs)",
        "",
        f"| run | child | train images x epochs | {val}{vunit} per epoch | best epoch | "
        + " | ".join(f"{k}{scale_of(k)[1]}" for k in keys)
        + " | wall (s) |",
        "|---|---|---|---|---|" + "---|" * len(keys) + "---|",
    ]
    for name, r in records:
        child = r["config"]["child"]
        arch = child["arch"] + (f" (width {child['width']})" if child.get("width") else "")
        digits = 2 if vscale == 100.0 else 3
        curve = " → ".join(f"{e[val] * vscale:.{digits}f}" for e in r["epochs"] if val in e)
        tests = " | ".join("–" if r.get(k) is None else f"{r[k] * scale_of(k)[0]:.{2 if scale_of(k)[0] == 100.0 else 3}f}" for k in keys)
        lines.append(
            f"| {name} | {arch} | {r['data']['sizes']['train']:,} x {len(r['epochs'])} | {curve} | "
            f"{r['best_epoch'] + 1} | {tests} | {r['fit_wall_s']:,.0f} |"
        )
    return lines


def _search_section(grid: dict[str, Any], out: Path, order: list[str]) -> dict[str, Any]:
    """The search protocol, each method's chosen settings and its full trial table (from ``out_dir/search``)."""
    if grid.get("search") is None:
        return {"lines": [], "json": None}
    search = grid["search"]
    picked = chosen(grid)
    lines = [
        "",
        "## Tuning (equal budget per method)",
        "",
        f"Every method: {search['trials']} trials (sampler: {SAMPLERS[search.get('sampler', 'sobol')]}; Optuna) on tuning seeds "
        f"{search['tuning_seeds']} (disjoint from the final seeds {grid['seeds']}), selected on the mean of "
        f"`{grid['metric']['val']}` over the tuning seeds; the test split is never evaluated while tuning.",
        "",
        "| method | chosen settings | trials: settings → mean validation |",
        "|---|---|---|",
    ]
    table = {}
    for m in order:
        trials = trial_records(out, m)
        table[m] = trials
        shown = "; ".join(f"#{t['trial']} {settings(t['params'])} → {t['val_mean']:.4f}" for t in trials)
        lines.append(f"| {m} | {settings(picked[m]) if m in picked else '(search not finished)'} | {shown} |")
    repeats = {m: _repeats(t) for m, t in table.items() if _repeats(t)}
    if repeats:
        lines += [
            "",
            "Repeated candidates (fewer distinct settings than trials): "
            + "; ".join(
                f"{m}: {len(table[m]) - len(r)} distinct in {len(table[m])} (" + ", ".join(f"#{a} = #{b}" for a, b in r) + ")"
                for m, r in repeats.items()
            )
            + ".",
        ]
    return {"lines": lines, "json": {"protocol": search, "chosen": picked, "trials": table}}


def _verdicts(rows: list[dict[str, Any]], refs: list[str], sign: int, scale: float, digits: int, key: str, family: int) -> list[str]:
    """One line per distinct comparison (HKT's first; a reference against an earlier one, e.g. `kd` vs `ce`): difference,
    CI, p, the Holm verdict and what the CI rules out."""
    pairs, seen = [], set()

    def first(r: dict[str, Any]) -> tuple[bool, int]:  # HKT, other methods, then dkd, kd, ce: each pair named once
        return not r["method"].startswith("hkt"), REFERENCES[::-1].index(r["method"]) if r["method"] in REFERENCES else -1

    for r in sorted(rows, key=first):
        for ref in refs:
            d = r[f"vs_{ref}"]
            if d is not None and frozenset((r["method"], ref)) not in seen:
                seen.add(frozenset((r["method"], ref)))
                pairs.append((r["method"], ref, d))
    lines = [
        f"### Verdicts on {key} (Holm over {family} distinct comparisons) and what each 95% CI rules out",
        "",
        "Each CI is per comparison (not simultaneous), so a CI that excludes 0 ranks nothing unless the Holm p < 0.05.",
        "",
    ]
    return lines + [_verdict_line(a, b, d, sign, scale, digits) for a, b, d in pairs]


def _verdict_line(a: str, b: str, d: dict[str, Any], sign: int, scale: float, digits: int) -> str:
    return (
        f"- `{a}` {verdict(d, sign)} `{b}`: {difference(d, scale, digits)[0]} over {d['n']} paired seeds, "
        f"p {p_value(d['p_value'])}, Holm p {p_value(d.get('p_holm', float('nan')))}; {bound(a, b, d, sign, scale, digits)}."
    )


def _extra_pairs(extra: list[dict[str, Any]], sign: int, scale: float, digits: int) -> list[str]:
    """Paired comparisons the grid asks for (``pairs: [[a, b], ...]``), e.g. two runs at another lr."""
    lines = [_verdict_line(d["a"], d["b"], d, sign, scale, digits) for d in extra]
    return ["", "Other paired comparisons:", "", *lines] if lines else []


def _hkt_diagnostics(records: dict[str, dict[int, dict[str, Any]]], order: list[str]) -> list[str]:
    """Last-epoch loss terms and gates of HKT runs, mean over seeds: what the method was actually doing."""
    lines = ["## HKT diagnostics (last epoch, mean over seeds)", "", "| method | loss terms | mean gate per gene |", "|---|---|---|"]
    found = False
    for m in order:
        last = [r["epochs"][-1] for r in records[m].values() if r.get("epochs")]
        terms = sorted({k for e in last for k in e if k.startswith("train/") and k not in ("train/loss", "train/lr")})
        gates = sorted({k for e in last for k in e if k.startswith("gate/")})
        if not gates:
            continue
        found = True
        t = ", ".join(f"{k[6:]} {statistics.mean(e[k] for e in last if k in e):.3f}" for k in terms)
        g = ", ".join(f"{k[5:]} {statistics.mean(e[k] for e in last if k in e):.3f}" for k in gates)
        lines.append(f"| {m} | {t} | {g} |")
    return lines if found else []


def _series(records: dict[int, dict[str, Any]], key: str) -> Any:
    """``(seeds, epochs)`` array of ``key`` over the epochs all seeds have (``None`` when absent)."""
    curves = [[e[key] for e in r.get("epochs", []) if key in e] for r in records.values()]
    n = min(len(c) for c in curves)
    return np.array([c[:n] for c in curves]) if n else None


def _plots(records: dict[str, dict[int, dict[str, Any]]], order: list[str], grid: dict[str, Any], out: Path) -> None:
    """Curves over epochs with a ± std band; bars with ± std error bars when the budget is one epoch."""

    def draw(series: list[tuple[str, Any]], ylabel: str, path: Path) -> None:
        series = [(label, a) for label, a in series if a is not None]
        if not series:
            return
        fig = Figure(figsize=(6.4, 3.6), dpi=100)  # no pyplot: no backend, no global figure state
        ax = fig.subplots()
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

    if not any(r.get("epochs") for m in order for r in records[m].values()):
        return  # records without per-epoch history (evidence v1's reconstructed ones): keep the plots they came with
    val_key = grid["metric"]["val"]
    draw([(m, _series(records[m], val_key)) for m in order], f"{val_key} (mean ± std over seeds)", out / "val_curves.png")
    gates = []
    for m in order:
        for g in sorted({k for r in records[m].values() for e in r.get("epochs", []) for k in e if k.startswith("gate/")}):
            gates.append((f"{m}: {g[5:]}", _series(records[m], g)))
    draw(gates, "mean inheritance rate g", out / "gates.png")
