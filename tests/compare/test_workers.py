"""Many workers, one study: two ``hkt compare`` processes share one search (on a real PostgreSQL server, and on
one SQLite file), one is ``kill -9``'d mid-trial and restarted; the search still has exactly ``trials`` distinct
trials per method, every run is trained once, and the summary equals a single worker's.

The PostgreSQL server comes from ``scripts/test.sh`` (``HKT_TEST_POSTGRES_URL``); without it that case is skipped.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_compare import write_grid

from hkt.compare.records import unhashed
from hkt.compare.spec import load_grid

HKT = [sys.executable, "-m", "hkt.cli"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # every process at one thread: the runs are then bit for bit the same


def make_grid(folder: Path, storage: str | None, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = write_grid(
        folder,
        {
            "ce": {"method": {"name": "ce"}, "parent": {"arch": None, "weights": None}},
            "kd": {"method": {"name": "kd"}, "space": {"method.kd_weight": {"low": 0.1, "high": 2.0, "log": True}}},
        },
    )
    grid = yaml.safe_load(path.read_text())
    grid["name"] = name
    grid["common"]["trainer"]["max_epochs"] = 2  # so that a kill can land between the epochs of a trial
    grid["common"]["data"]["train_subset"] = 2048  # an epoch of a second or two: time for the kill to land
    grid["search"] = {"trials": 3, "tuning_seeds": [7], "space": {"optim.lr": {"low": 0.001, "high": 0.05, "log": True}}}
    if storage:
        grid["search"]["storage"] = storage
    path.write_text(yaml.safe_dump(grid))
    return path


def start(grid: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen(HKT + ["compare", "-c", str(grid)], env=ENV, stdout=log.open("a"), stderr=subprocess.STDOUT)


def tables(folder: Path) -> str:
    """summary.md with the wall-clock cells masked (the only cells that differ between two executions)."""
    lines, timed = [], set()
    for line in (folder / "results" / "summary.md").read_text().splitlines():
        cells = line.split("|")
        if not line.startswith("|"):
            timed = set()
        elif "wall (s)" in cells[-2] or not timed and "step (s)" in line:  # a table's header row
            timed = {i for i, c in enumerate(cells) if c.strip() in ("wall (s)", "step (s)")}
        else:
            line = "|".join("t" if i in timed and not set(c) <= set("-") else c for i, c in enumerate(cells))
        lines.append(line)
    return "\n".join(lines)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The reference: one worker, its own SQLite study."""
    folder = tmp_path_factory.mktemp("single")
    grid = make_grid(folder, None, "workers")
    subprocess.run(HKT + ["compare", "-c", str(grid)], env=ENV, check=True, capture_output=True)
    return folder


def tuning_lock_of(work: Path, pid: int) -> Path | None:
    """A tuning run of ``pid`` that has finished its first epoch (so the kill lands mid-trial, between epochs)."""
    for lock in work.glob("tune/*/trial*/seed7/.hkt.lock"):
        try:
            holder = json.loads(lock.read_text())
        except (OSError, ValueError):
            continue
        if holder.get("pid") == pid and any(lock.parent.glob("checkpoints/*.ckpt")):
            return lock
    return None


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_two_workers_one_killed_give_the_single_worker_search(single, tmp_path, backend):
    if backend == "postgresql":
        url = os.environ.get("HKT_TEST_POSTGRES_URL")
        if not url:
            pytest.skip("no PostgreSQL server: run the suite through scripts/test.sh, which starts one")
        storage = url
    else:
        storage = f"sqlite:///{tmp_path / 'shared.db'}"
    grid = make_grid(tmp_path, storage, "workers")
    if backend == "postgresql":  # the server outlives one test: start from no study
        import optuna

        for method in ("ce", "kd"):
            try:
                optuna.delete_study(study_name=f"workers::{method}", storage=storage)
            except KeyError:
                pass
    shutil.copytree(single / "work" / "prepare", tmp_path / "work" / "prepare")  # the same parent and base, trained once
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    a, b = start(grid, logs[0]), start(grid, logs[1])
    deadline, lock = time.time() + 1200, None
    while lock is None and time.time() < deadline and a.poll() is None:
        lock = tuning_lock_of(tmp_path / "work", a.pid)
        time.sleep(0.05)
    assert lock is not None, "worker A never reached the middle of a trial: " + logs[0].read_text()[-2000:]
    os.kill(a.pid, signal.SIGKILL)
    a.wait()
    a = start(grid, logs[0])  # restarted
    for p in (a, b):
        assert p.wait(timeout=1800) == 0, "\n".join(log.read_text()[-3000:] for log in logs)
    subprocess.run(HKT + ["compare", "-c", str(grid), "--summarize-only"], env=ENV, check=True, capture_output=True)

    for method in ("ce", "kd"):
        ours = [json.loads(p.read_text()) for p in sorted((tmp_path / "results" / "search" / method).glob("trial*.json"))]
        ref = [json.loads(p.read_text()) for p in sorted((single / "results" / "search" / method).glob("trial*.json"))]
        assert [t["trial"] for t in ours] == [0, 1, 2], f"{method}: exactly the budget of trials"
        assert len({json.dumps(t["params"], sort_keys=True) for t in ours}) == 3, f"{method}: distinct candidates"
        assert [(t["params"], t["val_mean"]) for t in ours] == [(t["params"], t["val_mean"]) for t in ref]
    started = [line.split(":")[0] for log in logs for line in log.read_text().splitlines() if line.startswith("[hkt] fit ")]
    resumed = [line for log in logs for line in log.read_text().splitlines() if "resuming at epoch" in line]
    assert len(resumed) == 1 and str(lock.parent) in resumed[0], "only the killed run resumed"
    assert len(started) == len(set(started)) + 1, "every other run was trained once"
    assert len(set(started)) == 3 * 2 + 2 * 2  # 3 trials x 2 methods, 2 final seeds x 2 methods
    assert tables(tmp_path) == tables(single)
    assert "scrambled Sobol point n for trial n" in (tmp_path / "results" / "summary.md").read_text()


def test_a_wrong_password_names_the_host_not_the_password(tmp_path):
    url = os.environ.get("HKT_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("no PostgreSQL server: run the suite through scripts/test.sh, which starts one")
    from hkt.compare.search import open_study
    from hkt.compare.spec import load_grid
    from hkt.config import ConfigError

    grid = load_grid(make_grid(tmp_path, url.replace(":hkt-test@", ":wrong-pw-123@"), "workers"))
    with pytest.raises(ConfigError) as err:
        open_study(grid, "kd")
    message = str(err.value)
    assert "password authentication failed" in message and "127.0.0.1" in message
    assert "wrong-pw-123" not in message and "hkt-test" not in message and "\n" not in message


# Kill -9 at every point of a trial's life cycle (deterministic: HKT_KILL_AT), then one restart: the search equals a
# single uninterrupted worker's, trial for trial, and no trial is trained on defaults or published without parameters.

KILLS = {
    "search:ask@2": "before asking for trial 1",
    "search:params@2": "inside ask: trial 1 exists, RUNNING, without its parameters",
    "train_batch@12": "while trial 1 trains (mid-epoch)",
    "search:trained@1": "between trial 0's training and its tell",
    "search:told@1": "between trial 0's tell and its record",
}


def small_grid(folder: Path, storage: str | None, name: str, trials: int, seeds: list[int]) -> Path:
    """ce and kd (the prepared parent; children from scratch), 1 epoch (8 steps) on 512 images, ``trials`` trials each."""
    path = make_grid(folder, storage, name)
    grid = yaml.safe_load(path.read_text())
    del grid["prepare"]["base"]
    grid["common"]["child"] = {"arch": "resnet8", "width": 4, "weights": None}
    grid["common"]["data"]["train_subset"] = 512
    grid["common"]["trainer"]["max_epochs"] = 1
    grid["search"]["trials"], grid["seeds"] = trials, seeds
    path.write_text(yaml.safe_dump(grid))
    return path


def storage_for(backend: str, tmp_path: Path, name: str) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.db'}"
    url = os.environ.get("HKT_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("no PostgreSQL server: run the suite through scripts/test.sh, which starts one")
    import optuna

    for method in ("ce", "kd"):  # the server outlives one test: start from no study
        try:
            optuna.delete_study(study_name=f"{name}::{method}", storage=url)
        except KeyError:
            pass
    return url


def searched(folder: Path) -> dict:
    """Every trial record and final record, minus wall-clock times."""
    out = {}
    for p in sorted((folder / "results").glob("search/*/trial*.json")):
        t = json.loads(p.read_text())
        out[str(p.relative_to(folder))] = (t["params"], t["val_by_seed"], t["val_mean"])
    for p in sorted((folder / "results").glob("runs/*/seed*.json")):
        r = json.loads(p.read_text())
        out[str(p.relative_to(folder))] = (r["config"]["optim"], r["config"]["method"], r["val_acc_best"], r["test_acc"])
    return out


@pytest.fixture(scope="module")
def single_small(tmp_path_factory):
    folder = tmp_path_factory.mktemp("single_small")
    subprocess.run(HKT + ["compare", "-c", str(small_grid(folder, None, "kills", 2, [0]))], env=ENV, check=True, capture_output=True)
    return folder


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
@pytest.mark.parametrize("point", list(KILLS))
def test_a_search_killed_at_any_point_of_a_trial_equals_one_uninterrupted_worker(single_small, tmp_path, backend, point):
    grid = small_grid(tmp_path, storage_for(backend, tmp_path, "kills"), "kills", 2, [0])
    shutil.copytree(single_small / "work" / "prepare", tmp_path / "work" / "prepare")  # the same parent, trained once
    killed = subprocess.run(HKT + ["compare", "-c", str(grid)], env={**ENV, "HKT_KILL_AT": point}, capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, f"{point} was never reached: {killed.stdout[-2000:]}"
    again = subprocess.run(HKT + ["compare", "-c", str(grid)], env=ENV, capture_output=True, text=True, timeout=1200)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "{}" not in "".join(line for line in again.stdout.splitlines() if "trial" in line), "a trial ran without parameters"
    assert searched(tmp_path) == searched(single_small), f"{point} ({KILLS[point]})"
    assert unhashed(load_grid(grid)) == [], "every record that read a parent names its weights"


def test_a_worker_killed_at_random_moments_beside_a_second_gives_the_single_worker_search(tmp_path_factory, tmp_path):
    import random

    reference = tmp_path_factory.mktemp("single_random")
    subprocess.run(HKT + ["compare", "-c", str(small_grid(reference, None, "random", 4, [0, 1]))], env=ENV, check=True, capture_output=True)
    grid = small_grid(tmp_path, f"sqlite:///{tmp_path / 'shared.db'}", "random", 4, [0, 1])
    shutil.copytree(reference / "work" / "prepare", tmp_path / "work" / "prepare")
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    b = start(grid, logs[1])
    rng = random.Random(36)
    for _ in range(12):  # kill moments drawn at random, from the start-up to deep inside a trial
        a = start(grid, logs[0])
        time.sleep(rng.uniform(0.5, 6.0))
        os.kill(a.pid, signal.SIGKILL)
        a.wait()
    a = start(grid, logs[0])
    for p in (a, b):
        assert p.wait(timeout=1200) == 0, "\n".join(log.read_text()[-3000:] for log in logs)
    subprocess.run(HKT + ["compare", "-c", str(grid)], env=ENV, check=True, capture_output=True)  # summarises what B skipped
    assert searched(tmp_path) == searched(reference)
