"""Budget ladder: reads the committed grids, agrees with their summaries, refuses a grid whose runs saw
different budgets, and every committed ladder rebuilds byte for byte."""

import json
import shutil
from pathlib import Path

import pytest

from hkt.cli import main
from hkt.compare.ladder import budget, ladder

ROOT = Path(__file__).resolve().parents[2]
B1 = ROOT / "benchmarks" / "results" / "evidence_v2_fashion_b1"


def test_ladder_agrees_with_the_grid_summary(tmp_path):
    out = ladder({"fashion_mnist": [str(B1)]}, tmp_path)
    summary = json.loads((B1 / "summary.json").read_text())["by_metric"]["test_acc"]["rows"]
    (rung,) = out["panels"]["fashion_mnist"]
    assert rung["budget"] == 12000 * 3
    assert rung["test"] == {r["method"]: r["test"] for r in summary}
    # the mean ± std cell of each method is the one in the grid's own summary table
    table = (B1 / "summary.md").read_text()
    for line in (tmp_path / "ladder.md").read_text().splitlines():
        if line.startswith("| hkt_wean |"):
            assert line.split(" | ")[3] in table
    assert (tmp_path / "ladder.png").stat().st_size > 0


def test_a_grid_with_mixed_budgets_is_refused(tmp_path):
    shutil.copytree(B1 / "runs", tmp_path / "runs")
    record = tmp_path / "runs" / "ce" / "seed0.json"
    r = json.loads(record.read_text())
    r["config"]["trainer"]["max_epochs"] = 5
    record.write_text(json.dumps(r))
    with pytest.raises(ValueError, match=r"found \[36000, 60000\]"):
        budget(tmp_path)


def test_bad_panel_spec_is_a_clear_error(capsys):
    assert main(["report", "ladder", "fashion_mnist", "--out", "x"]) == 2
    assert "hkt report ladder: error: 'fashion_mnist': expected TITLE=DIR[,DIR...]" in capsys.readouterr().err


def test_committed_ladders_rebuild_byte_for_byte(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # sources are recorded relative to the repository root
    committed = sorted((ROOT / "benchmarks" / "results").glob("*/ladder.json"))
    assert committed, "evidence v2's ladder (benchmarks/results/evidence_v2_ladder) is committed"
    for path in committed:
        sources = json.loads(path.read_text())["sources"]
        out = tmp_path / path.parent.name
        ladder(sources, out)
        for f in ("ladder.md", "ladder.json", "ladder.png"):
            assert (out / f).read_bytes() == (path.parent / f).read_bytes(), f"{path.parent.name}/{f}"


def test_a_grid_not_run_yet_is_a_clear_error(tmp_path, capsys):
    assert main(["report", "ladder", f"fashion_mnist={tmp_path / 'nope'}", "--out", str(tmp_path / "out")]) == 2
    assert "summary.json is missing: run (or --summarize-only) that grid's hkt compare first" in capsys.readouterr().err
