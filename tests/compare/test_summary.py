"""The grid summary: Holm over distinct comparisons (a pair and its mirror once), the bound each CI states, the cost
columns, and every committed summary rebuilding byte for byte from its records."""

import json
import shutil
from pathlib import Path

import pytest
import yaml

from hkt.compare.format import bound
from hkt.compare.spec import load_grid
from hkt.compare.summary import holm, paired, summarize

ROOT = Path(__file__).resolve().parents[2]

TEST = {  # test accuracy per method and seed: kd ~ +1 point over ce, hkt ~ +0.5 over ce
    "ce": [0.800, 0.810, 0.805, 0.795],
    "kd": [0.812, 0.818, 0.813, 0.806],
    "hkt": [0.803, 0.817, 0.808, 0.801],
}


def fake_grid(tmp_path, trainable=True):
    out = tmp_path / "results"
    for method, values in TEST.items():
        for seed, acc in enumerate(values):
            record = {"test_acc": acc, "val_acc_best": acc, "fit_wall_s": 10.0, "child_params": 1000}
            if trainable:
                record["trainable_params"] = 1000 + (234 if method == "hkt" else 0)
            path = out / "runs" / method / f"seed{seed}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(record))
    return {"out_dir": str(out), "methods": dict.fromkeys(TEST), "metric": {"test": "test_acc", "val": "val/acc", "higher_is_better": True}}


def test_a_pair_and_its_mirror_are_one_comparison_in_the_holm_family(tmp_path):
    summary = summarize(fake_grid(tmp_path))
    rows = {r["method"]: r for r in summary["by_metric"]["test_acc"]["rows"]}
    by_seed = {m: dict(enumerate(v)) for m, v in TEST.items()}
    raw = [paired(by_seed[a], by_seed[b])["p_value"] for a, b in (("kd", "ce"), ("hkt", "ce"), ("hkt", "kd"))]
    expected = holm(raw)  # three distinct comparisons, not four: ce vs kd is kd vs ce
    assert [rows["kd"]["vs_ce"]["p_holm"], rows["hkt"]["vs_ce"]["p_holm"], rows["hkt"]["vs_kd"]["p_holm"]] == expected
    assert rows["ce"]["vs_kd"]["p_holm"] == rows["kd"]["vs_ce"]["p_holm"]
    assert min(expected) == pytest.approx(3 * min(raw))
    md = (tmp_path / "results" / "summary.md").read_text()
    assert "(Holm over 3 distinct comparisons)" in md
    verdicts = [line for line in md.splitlines() if line.startswith("- `")]
    # raw p 0.0025 (kd-ce), 0.0192 (hkt-ce), 0.0549 (hkt-kd) -> Holm x3, x2, x1: 0.0075, 0.0384, 0.0549
    assert expected == pytest.approx([0.0075, 0.0384, 0.0549], abs=1e-4)
    assert [v.split(":")[0] for v in verdicts] == [  # HKT's first, each pair once
        "- `hkt` beats `ce`",
        "- `hkt` is not significantly different from `kd`",
        "- `kd` beats `ce`",
    ]
    assert verdicts[1].endswith(
        "`hkt`'s gain over `kd` is below +0.02 points and its loss below 1.02 points: the 95% CI rules out larger effects, not a zero one."
    )


def test_each_ci_is_stated_as_the_effects_it_rules_out():
    # accuracies in points (scale 100), higher is better
    assert bound("hkt", "kd", {"ci95": [-0.0048, -0.0008]}, 1, 100.0, 2) == (
        "`hkt`'s loss to `kd` is between 0.08 points and 0.48 points: "
        "the 95% CI rules out a zero effect, any gain and losses above 0.48 points"
    )
    assert bound("hkt", "ce", {"ci95": [-0.002, 0.003]}, 1, 100.0, 2) == (
        "`hkt`'s gain over `ce` is below +0.30 points and its loss below 0.20 points: the 95% CI rules out larger effects, not a zero one"
    )
    assert bound("kd", "ce", {"ci95": [0.0017, 0.0074]}, 1, 100.0, 2) == (
        "`kd`'s gain over `ce` is between +0.17 points and +0.74 points: the 95% CI rules out a zero effect and gains above +0.74 points"
    )
    # lower is better (EPE): a higher EPE is a loss, in the metric's own unit
    assert bound("hkt", "ce", {"ci95": [0.1, 0.3]}, -1, 1.0, 3) == (
        "`hkt`'s loss to `ce` is between 0.100 and 0.300: the 95% CI rules out a zero effect, any gain and losses above 0.300"
    )


def test_the_table_shows_parameters_while_training_and_deployed(tmp_path):
    summarize(fake_grid(tmp_path))
    md = (tmp_path / "results" / "summary.md").read_text()
    assert "| trainable params | deployed params |" in md
    assert [line.split("|")[-3:-1] for line in md.splitlines() if line.startswith("| hkt |")] == [[" 1,234 ", " 1,000 "]]
    summarize(fake_grid(tmp_path / "old", trainable=False))  # records from before trainable_params were kept
    old = (tmp_path / "old" / "results" / "summary.md").read_text()
    assert [line.split("|")[-3:-1] for line in old.splitlines() if line.startswith("| hkt |")] == [[" – ", " 1,000 "]]


def committed_grids():
    """Every grid config in configs/ whose out_dir has a committed summary."""
    for config in sorted((ROOT / "configs").glob("*.yaml")):
        raw = yaml.safe_load(config.read_text())
        if isinstance(raw, dict) and "methods" in raw and (ROOT / raw["out_dir"] / "summary.json").is_file():
            yield config


def test_committed_summaries_rebuild_byte_for_byte(tmp_path):
    configs = list(committed_grids())
    assert len(configs) >= 5  # cifar10_cpu, fashion_mnist, lits_cpu, evidence v2 Fashion-MNIST budget 1 + diagnosis
    for config in configs:
        grid = load_grid(config)
        committed, name = ROOT / grid["out_dir"], Path(grid["out_dir"]).name
        shutil.copytree(committed, tmp_path / name)
        grid["out_dir"] = str(tmp_path / name)
        summarize(grid)
        for f in ("summary.md", "summary.json"):
            assert (tmp_path / name / f).read_bytes() == (committed / f).read_bytes(), f"{grid['out_dir']}/{f}"


def test_holm_by_hand():
    # sorted p 0.01, 0.02, 0.04 (m = 3): 0.03, max(0.03, 0.04) = 0.04, max(0.04, 0.04) = 0.04; nan is not counted
    assert holm([0.04, 0.01, float("nan"), 0.02]) == pytest.approx([0.04, 0.03, float("nan"), 0.04], nan_ok=True)
    assert holm([0.5, 0.9]) == [1.0, 1.0]
