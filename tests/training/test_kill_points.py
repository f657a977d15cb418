"""``kill -9`` at every point of ``hkt fit``, then ``hkt fit --resume``: the finished run equals an uninterrupted one
bit for bit (weights, ``history.json``, ``result.json`` metrics, ``logs/metrics.csv``). Each kill is deterministic:
``HKT_KILL_AT`` makes the process SIGKILL itself at a named point (``hkt.io.kill_point``), never after a timeout."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HKT = str(Path(sys.executable).with_name("hkt"))
RUN = [
    "data.name=fashion_mnist",
    "data.train_subset=512",
    "data.val_size=256",
    "data.test_subset=256",
    "data.batch_size=64",
    "data.num_workers=0",
    "child.arch=resnet8",
    "child.width=4",
    "parent.arch=resnet8",
    "parent.width=4",
    "method={name: kd}",
    "trainer.max_epochs=3",
    "trainer.enable_progress_bar=false",
]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same thread count in every process: CPU kernels split sums by thread
POINTS = {  # HKT_KILL_AT: where it lands (3 epochs of 8 steps)
    "train_batch@10": "mid-epoch (epoch 2, step 2)",
    "validation@3": "during validation (epoch 2)",
    "saved:last.ckpt@1": "just after epoch 1's last.ckpt, before Lightning logs the epoch's training means",
    "write:history.json@2": "while history.json of epoch 2 is written",
    "epoch_start@3": "between epochs 2 and 3",
    "write:metrics.csv@7": "while metrics.csv is written",
    "trained": "after the last epoch, before testing (issue 36's regression)",
    "test": "during testing",
    "tested": "after testing, before result.json",
    "write:result.json": "while result.json is written",
}


def fit(out: Path, *extra: str, kill: str | None = None) -> subprocess.CompletedProcess:
    env = {**ENV, "HKT_KILL_AT": kill} if kill else ENV
    return subprocess.run([HKT, "fit", *extra, *RUN, f"out_dir={out}"], env=env, capture_output=True, text=True, timeout=1200)


def untimed(epochs: list[dict]) -> list[dict]:
    return [{k: v for k, v in e.items() if not k.endswith("_s")} for e in epochs]


def outcome(out: Path) -> dict:
    """Everything a finished run keeps, minus wall-clock times and its folder's name."""
    state = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    result = json.loads((out / "result.json").read_text())
    result["config"].pop("out_dir")
    return {
        "weights": {k: v for k, v in state.items() if k.startswith("method.child.")},
        "history": untimed(json.loads((out / "history.json").read_text())["epochs"]),
        "result": {k: untimed(v) if k == "epochs" else v for k, v in result.items() if k not in ("fit_wall_s", "median_step_s")},
        "csv": (out / "logs" / "metrics.csv").read_text(),
    }


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("straight") / "run"
    assert fit(out).returncode == 0
    return outcome(out)


@pytest.mark.parametrize("point", list(POINTS))
def test_resume_after_a_kill_at_any_point_equals_an_uninterrupted_run(point, straight, tmp_path):
    out = tmp_path / "run"
    killed = fit(out, kill=point)
    assert killed.returncode == -signal.SIGKILL, f"{point}: the kill point was never reached\n{killed.stderr[-2000:]}"
    assert not (out / "result.json").is_file()
    resumed = fit(out, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    got = outcome(out)
    for key in ("history", "result", "csv"):
        assert got[key] == straight[key], f"{point} ({POINTS[point]}): {key} differs"
    assert all(torch.equal(got["weights"][k], straight["weights"][k]) for k in straight["weights"]), f"{point}: weights differ"


def test_a_finished_run_is_reported_finished_not_retrained(tmp_path):
    out = tmp_path / "run"
    assert fit(out).returncode == 0
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    again = fit(out, "--resume")
    assert again.returncode == 0 and "already finished" in again.stderr and "epoch 1/" not in again.stderr
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before
    # a result.json truncated by a full disk is named, and the run is finished again from its last checkpoint
    (out / "result.json").write_text((out / "result.json").read_text()[:100])
    redone = fit(out, "--resume")
    assert redone.returncode == 0 and f"{out / 'result.json'} cannot be read" in redone.stderr
    assert json.loads((out / "result.json").read_text())["best_epoch"] in (0, 1, 2)
