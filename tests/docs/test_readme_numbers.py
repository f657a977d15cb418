"""The README's evidence tables equal the committed summaries they cite: every table under a
``<!-- table from <summary.md> -->`` marker is rebuilt from that grid's summary.json, cell by cell."""

import json
import re
from pathlib import Path

import pytest

from hkt.compare.format import bound, difference, mean_std, p_value, verdict
from hkt.compare.summary import REFERENCES

ROOT = Path(__file__).resolve().parents[2]


def cited_tables(text):
    """``[(summary path, [table rows as cell lists])]`` for every marked table."""
    out = []
    for m in re.finditer(r"<!-- table from (\S+) -->\n((?:\|.*\n)+)", text):
        rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in m.group(2).splitlines()[2:]]
        out.append((m.group(1), rows))
    return out


def summary_rows(source):
    """The test-accuracy rows of the summary.json beside a cited ``summary.md``."""
    return json.loads((ROOT / source).with_name("summary.json").read_text())["by_metric"]["test_acc"]["rows"]


def expected_cells(row):
    vs = []
    for ref in REFERENCES:
        d = row.get(f"vs_{ref}")
        if d is None:
            vs.append("–")
        elif ref == "ce":
            vs.append(f"{difference(d, 100.0, 2)[0]}, {p_value(d['p_holm'])}")
        else:
            vs.append(f"{d['mean_diff'] * 100:+.2f}, {p_value(d['p_holm'])}")
    return [mean_std(row["test"], 100.0, 2), *vs]


def bold(text: str, opening: str) -> str:
    """The bold README paragraph after ``**<opening>``, whitespace-normalised."""
    return " ".join(re.search(rf"\*\*{re.escape(opening)}(.*?)\*\*", text, re.S).group(1).split())


def test_readme_tables_equal_their_summaries():
    tables = cited_tables((ROOT / "README.md").read_text())
    assert len(tables) >= 2  # evidence v2: Fashion-MNIST and CIFAR-10, budgets 1 and 2 each
    for source, rows in tables:
        by_method = {r["method"]: r for r in summary_rows(source)}
        assert {re.search(r"`(\w+)`", r[0]).group(1) for r in rows} == set(by_method), source
        for cells in rows:
            method = re.search(r"`(\w+)`", cells[0]).group(1)
            assert cells[1:] == expected_cells(by_method[method]), f"{source}: {method}"


def test_headline_verdict_matches_the_adjusted_statistics():
    """The bold evidence-v2 headline says which HKT variants beat tuned ce, kd or dkd (Holm p < 0.05) in the v2 grids
    the README cites; it must agree with those grids' summaries: no win claimed over ce or kd unless one exists, and
    every win named with its rival."""
    text = (ROOT / "README.md").read_text()
    headline = bold(text, "Evidence v2: ")
    wins = []
    for source, _ in [t for t in cited_tables(text) if "evidence_v2" in t[0]]:
        for row in summary_rows(source):
            for ref in REFERENCES:
                d = row.get(f"vs_{ref}")
                if row["method"].startswith("hkt") and d and d["p_holm"] < 0.05 and d["mean_diff"] > 0:
                    wins.append((row["method"], ref))
    if "no HKT variant beats tuned `ce` or `kd`" in headline:
        assert not [w for w in wins if w[1] in ("ce", "kd")], f"the headline denies wins over ce/kd that exist: {wins}"
    for method, ref in wins:
        assert f"`{method}`" in headline and f"`{ref}`" in headline, f"the headline must name {method} beating {ref}"


def test_readme_step_cost_rows_equal_the_committed_benchmark():
    """Every row of benchmarks/results/step_cost.md's tables appears in README as it is (method names aside)."""
    rows = [
        line
        for line in (ROOT / "benchmarks" / "results" / "step_cost.md").read_text().splitlines()
        if line.startswith("| ") and "median step" not in line
    ]
    readme = (ROOT / "README.md").read_text()
    assert len(rows) == 30 and all(row in readme for row in rows), [r for r in rows if r not in readme]


def test_readme_engine_before_after_rows_equal_the_committed_benchmark():
    """The before/after engine table in README is benchmarks/results/engine_before_after.md's, row for row."""
    table = (ROOT / "benchmarks/results/engine_before_after.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ResNet-56")]
    readme = (ROOT / "README.md").read_text()
    assert len(rows) == 6 and all(row in readme for row in rows), [r for r in rows if r not in readme]


def test_readme_demo_table_is_the_committed_demo_output():
    rows = json.loads((ROOT / "benchmarks/results/demo/demo.json").read_text())
    table = (ROOT / "benchmarks/results/demo/demo.md").read_text()
    assert table in (ROOT / "README.md").read_text()
    for r in rows:  # demo.md is the table of its own records
        assert f"| {r['method']} | {100 * r['val_acc']:.2f} | {100 * r['test_acc']:.2f} |" in table


def cited_bounds(text):
    """``[(summary path, [(a, b, sentence)])]`` for every ``<!-- bounds from <summary.md> -->`` list."""
    out = []
    for m in re.finditer(r"<!-- bounds from (\S+) -->\n((?:- .*\n)+)", text):
        bullets = [line.split(": ", 1)[1].removesuffix(".") for line in m.group(2).splitlines()]
        out.append((m.group(1), [(*re.findall(r"`(\w+)`", b)[:2], b) for b in bullets]))
    return out


def test_headline_bounds_are_the_committed_cis():
    """Every bound sentence the README states is the one its grid's summary prints for that pair, and the headline's
    "below +X points in all four grids" is the largest upper bound of the reference HKT over kd among them."""
    text = (ROOT / "README.md").read_text()
    cited = cited_bounds(text)
    assert len([c for c in cited if "evidence_v2" in c[0]]) == 4  # evidence v2: two datasets x two budgets
    upper = []
    for source, bullets in cited:
        rows = {r["method"]: r for r in summary_rows(source)}
        for a, b, sentence in bullets:
            d = rows[a][f"vs_{b}"]
            assert sentence == bound(a, b, d, 1, 100.0, 2), f"{source}: {a} vs {b}"
            if (a, b) == ("hkt", "kd") and "evidence_v2" in source:
                upper.append(d["ci95"][1] * 100)
    headline = bold(text, "Evidence v2: ")
    assert len(upper) == 4 and f"over tuned `kd` is below +{max(upper):.2f} points in all four grids" in headline


def listed(names: list[str]) -> str:
    """A list of methods as the README writes it: backquoted, commas, "and" before the last."""
    quoted = [f"`{n}`" for n in names]
    return " and ".join(quoted) if len(quoted) < 3 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


@pytest.mark.parametrize("pair, grid", [("A", "evidence_v3_resnet8"), ("B", "evidence_v3_vit")])
def test_evidence_v3_headlines_are_their_summaries(pair, grid):
    """Each pair's bold headline names exactly the rivals hkt beats and loses to after Holm and those it does not
    differ from significantly, and the sentence after it gives each significant difference's committed CI."""
    text = (ROOT / "README.md").read_text()
    rows = {r["method"]: r for r in summary_rows(f"benchmarks/results/{grid}/summary.md")}
    headline = bold(text, f"Evidence v3, pair {pair} ")
    verdicts = {"beats": [], "loses to": [], "is not significantly different from": []}
    for ref in REFERENCES:
        if rows["hkt"].get(f"vs_{ref}") is not None:
            verdicts[verdict(rows["hkt"][f"vs_{ref}"], 1)].append(ref)
    for verb, refs in verdicts.items():
        assert (f"`hkt` {verb} " in headline) == bool(refs), f"pair {pair}: '{verb}' said of the wrong rivals ({refs})"
        assert not refs or f"`hkt` {verb} {listed(refs)}" in headline, f"pair {pair}: hkt {verb} {listed(refs)}"
    after = " ".join(text.split()).split(headline, 1)[1].split("<!--")[0]
    for ref in verdicts["beats"] + verdicts["loses to"]:
        lo, hi = (100 * c for c in rows["hkt"][f"vs_{ref}"]["ci95"])
        said = f"between +{lo:.2f} and +{hi:.2f} points over `{ref}`" if lo > 0 else f"between {-hi:.2f} and {-lo:.2f} points to `{ref}`"
        assert said in after, f"pair {pair}: {said}"
    if pair == "B":
        said = verdict(rows["kd"]["vs_ce"], 1)
        assert said == "is not significantly different from" and f"`kd` {said} `ce`" in headline
    if pair == "A":  # its headline also ranks the rivals: dkd above all, the others indistinct where compared
        assert "`dkd` beats all five others" in headline
        assert all(verdict(rows[m]["vs_dkd"], 1) == "loses to" for m in rows if m != "dkd")
        assert "`kd`, `kd_ls` and `dist` are not significantly different from `ce` or from each other where compared" in headline
        pairs = [(m, ref) for m in ("kd", "kd_ls", "dist") for ref in ("ce", "kd") if m != ref]
        assert all(verdict(rows[m][f"vs_{ref}"], 1) == "is not significantly different from" for m, ref in pairs)
