"""The committed wall-time table (benchmarks/results/evidence_v2_cost) is rebuilt from the committed records by the
command written at its top, byte for byte: its numbers are sums of records, never typed in."""

import re
import shlex
from pathlib import Path

from hkt.cli import main

ROOT = Path(__file__).resolve().parents[2]
COST = ROOT / "benchmarks" / "results" / "evidence_v2_cost"


def test_committed_cost_table_rebuilds_byte_for_byte(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the command names grids relative to the repository root
    command = re.search(r"`hkt report cost ([^`]+)`", (COST / "cost.md").read_text()).group(1)
    argv = shlex.split(command)
    out = argv.index("--out")
    argv[out + 1] = str(tmp_path)
    assert main(["report", "cost", *argv]) == 0
    assert (tmp_path / "cost.json").read_bytes() == (COST / "cost.json").read_bytes()
    # cost.md names its --out; everything after that line is the table
    assert (tmp_path / "cost.md").read_text().split("\n", 3)[3] == (COST / "cost.md").read_text().split("\n", 3)[3]


def test_a_grid_not_run_yet_is_a_clear_error(tmp_path, capsys):
    assert main(["report", "cost", str(tmp_path / "nope"), "--out", str(tmp_path / "out")]) == 2
    assert "hkt report cost: error:" in (err := capsys.readouterr().err) and "has no runs/ folder" in err
