"""Equal-budget search in ``hkt compare``: a tiny search that is killed and resumed, never evaluates the test
split while tuning, feeds its chosen settings to the final seeds; bad search input fails before training."""

import json
from pathlib import Path

import pytest
import yaml
from test_compare import write_grid

from hkt.compare import search as search_mod
from hkt.compare.records import trial_records
from hkt.compare.run import run_grid
from hkt.compare.spec import load_grid, run_config
from hkt.config import ConfigError
from hkt.data.datamodule import SplitData

ROOT = Path(__file__).resolve().parents[2]


def grid_with_search(tmp_path, search=None, methods=None, seeds=(0,)):
    path = write_grid(
        tmp_path,
        methods
        or {
            "ce": {"method": {"name": "ce"}, "parent": {"arch": None, "weights": None}},
            "kd": {"method": {"name": "kd"}, "space": {"method.kd_weight": {"low": 0.1, "high": 2.0, "log": True}}},
        },
    )
    grid = yaml.safe_load(path.read_text())
    grid["seeds"] = list(seeds)
    grid["search"] = search or {"trials": 2, "tuning_seeds": [7], "space": {"optim.lr": {"low": 0.001, "high": 0.05, "log": True}}}
    path.write_text(yaml.safe_dump(grid))
    return path


def test_search_resumes_after_a_kill_never_tests_while_tuning_and_feeds_the_final_seeds(tmp_path, monkeypatch):
    grid = load_grid(grid_with_search(tmp_path))
    from hkt.training import run as run_mod

    for name in grid["prepare"]:
        run_mod.fit_or_resume(run_config(grid, name, None))

    def no_test(self):
        raise AssertionError("the test split was read while tuning")

    monkeypatch.setattr(SplitData, "test_dataloader", no_test)
    real, calls = run_mod.fit_or_resume, []

    def killed_on_third_run(cfg, evaluate_test=True):
        calls.append(cfg["out_dir"])
        if len(calls) == 3:
            raise RuntimeError("killed")  # the storage keeps this trial RUNNING, as after kill -9
        return real(cfg, evaluate_test)

    monkeypatch.setattr(search_mod, "fit_or_resume", killed_on_third_run)
    with pytest.raises(RuntimeError, match="killed"):
        search_mod.tune(grid)
    monkeypatch.setattr(search_mod, "fit_or_resume", real)
    chosen = search_mod.tune(grid)
    assert set(chosen) == {"ce", "kd"} and set(chosen["kd"]) == {"optim.lr", "method.kd_weight"}
    for method in ("ce", "kd"):
        trials = trial_records(grid["out_dir"], method)
        assert [t["trial"] for t in trials] == [0, 1], "every method gets exactly the same number of trials"
        for t in trials:
            record = json.loads((Path(grid["work_dir"]) / "tune" / method / f"trial{t['trial']}" / "seed7" / "result.json").read_text())
            assert not any(k.startswith("test_") for k in record), "a tuning run evaluated the test split"
            assert t["fit_wall_s"] == record["fit_wall_s"] > 0  # the trial's cost is kept with its result
    study, _ = search_mod.open_study(grid, "kd")
    assert len(study.trials) == 2  # the killed trial was resumed with its own parameters, not replaced
    # a fresh checkout has no study database: it is rebuilt from the committed trial records, nothing reruns
    (Path(grid["work_dir"]) / "search.db").unlink()
    before = sorted(p.stat().st_mtime_ns for p in Path(grid["work_dir"], "tune").rglob("result.json"))
    assert search_mod.tune(grid) == chosen
    assert sorted(p.stat().st_mtime_ns for p in Path(grid["work_dir"], "tune").rglob("result.json")) == before

    monkeypatch.undo()
    run_grid(grid)
    final = json.loads((Path(grid["out_dir"]) / "runs" / "kd" / "seed0.json").read_text())
    assert final["config"]["optim"]["lr"] == chosen["kd"]["optim.lr"]
    assert final["config"]["method"]["kd_weight"] == chosen["kd"]["method.kd_weight"]
    summary = (Path(grid["out_dir"]) / "summary.md").read_text()
    assert "## Tuning (equal budget per method)" in summary and "| kd | lr=" in summary and "#1 lr=" in summary


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"space": {"optim.lr": {"low": 0.001, "high": 0.1}, "method.kd_wieght": {"low": 0.1, "high": 1.0}}},
            r"unknown config key 'method\.kd_wieght'.*kd_weight",
        ),
        ({"space": {}}, r"search space of method 'kd' is empty"),
        ({"space": {"method.kd_weight": {"low": 0.1, "high": 1.0}}}, r"lacks optim\.lr"),
        ({"tuning_seeds": [0, 9]}, r"tuning_seeds and seeds overlap on \[0\]"),
        ({"storage": "sqlite:////no/such/folder/search.db"}, r"cannot open the search storage sqlite:////no/such/folder/search\.db"),
        ({"sampler": "random"}, r"search\.sampler must be sobol or grid, got .random."),
        ({"sampler": "tpe"}, r"tpe replays its seeded draws"),
        ({"space": {"optim.lr": {"choices": [0.01, 0.02]}}, "sampler": "grid", "trials": 3}, r"2 grid points but search\.trials = 3"),
    ],
)
def test_bad_search_input_fails_before_training(tmp_path, change, message):
    base = {"trials": 2, "tuning_seeds": [7], "space": {"optim.lr": {"low": 0.001, "high": 0.05, "log": True}}}
    grid = load_grid if "storage" not in change else (lambda p: search_mod.open_study(load_grid(p), "kd"))
    with pytest.raises(ConfigError, match=message):
        grid(grid_with_search(tmp_path, {**base, **change}, methods={"kd": {"method": {"name": "kd"}}}))


def test_unequal_trial_budgets_are_refused(tmp_path):
    methods = {"ce": {"method": {"name": "ce"}, "parent": {"arch": None, "weights": None}, "trials": 5}}
    with pytest.raises(ConfigError, match=r"methods\.ce\.trials = 5 but search\.trials = 2"):
        load_grid(grid_with_search(tmp_path, methods=methods))


def test_grid_sampler_runs_every_point_once_through_ask_and_tell(tmp_path, monkeypatch):
    # Optuna's GridSampler calls study.stop() after its last point, an error outside study.optimize
    space = {"optim.lr": {"choices": [0.01, 0.02, 0.04]}}
    ce = {"ce": {"method": {"name": "ce"}, "parent": {"arch": None, "weights": None}}}
    grid = load_grid(grid_with_search(tmp_path, {"trials": 3, "tuning_seeds": [7], "sampler": "grid", "space": space}, ce))
    monkeypatch.setattr(search_mod, "_objective", lambda g, m, n, p: (p["optim.lr"], {7: p["optim.lr"]}, 0.0, []))
    assert search_mod.tune(grid) == {"ce": {"optim.lr": 0.04}}
    assert sorted(r["params"]["optim.lr"] for r in trial_records(grid["out_dir"], "ce")) == [0.01, 0.02, 0.04]


def _fake_objective(g, m, n, p):
    value = -abs(p["optim.lr"] - 0.01)  # any pure function of the candidate
    return value, {7: value}, 0.0, []  # mean, per seed, wall, parents' weight hashes


def test_candidates_depend_only_on_the_trial_number_whatever_the_kills(tmp_path, monkeypatch):
    search = {"trials": 6, "tuning_seeds": [7], "space": {"optim.lr": {"low": 0.001, "high": 0.05, "log": True}}}
    kd = {"kd": {"method": {"name": "kd"}, "space": {"method.kd_weight": {"low": 0.1, "high": 2.0, "log": True}}}}
    monkeypatch.setattr(search_mod, "_objective", _fake_objective)
    (tmp_path / "whole").mkdir(), (tmp_path / "killed").mkdir()
    whole = load_grid(grid_with_search(tmp_path / "whole", search, kd))
    search_mod.tune(whole)
    killed = load_grid(grid_with_search(tmp_path / "killed", search, kd))
    for kill_at in (2, 4):  # killed after 2 of 6 finished trials, twice; every tune() is a fresh sampler, as a new process

        def objective(g, m, n, p, kill_at=kill_at):
            if n == kill_at:
                raise KeyboardInterrupt("killed")  # leaves trial n RUNNING in the storage
            return _fake_objective(g, m, n, p)

        monkeypatch.setattr(search_mod, "_objective", objective)
        with pytest.raises(KeyboardInterrupt):
            search_mod.tune(killed)
    monkeypatch.setattr(search_mod, "_objective", _fake_objective)
    search_mod.tune(killed)
    got = [r["params"] for r in trial_records(killed["out_dir"], "kd")]
    assert got == [r["params"] for r in trial_records(whole["out_dir"], "kd")]
    assert len({json.dumps(p, sort_keys=True) for p in got}) == 6, "six distinct candidates"
    lrs = sorted(p["optim.lr"] for p in got)
    assert 0.001 <= lrs[0] and lrs[-1] <= 0.05 and lrs[-1] / lrs[0] > 5, "the candidates spread over the space"
    study, _ = search_mod.open_study(killed, "kd")
    assert [t.number for t in study.trials] == list(range(6)), "the killed trials were resumed, not replaced"


def test_a_worker_handed_a_number_past_the_budget_fails_it_and_stops(tmp_path, monkeypatch):
    grid = load_grid(grid_with_search(tmp_path, methods={"ce": {"method": {"name": "ce"}, "parent": {"arch": None, "weights": None}}}))
    monkeypatch.setattr(search_mod, "_objective", _fake_objective)
    study, dists = search_mod.open_study(grid, "ce")
    study.ask(dists)  # another worker's trial 0, left running on this host
    real_ask, asked = type(study).ask, []

    def racing_ask(self, *args, **kwargs):  # between our count and our ask, a second worker takes trial 1
        if not asked:
            asked.append(real_ask(self, *args, **kwargs))
        return real_ask(self, *args, **kwargs)

    monkeypatch.setattr(type(study), "ask", racing_ask)
    search_mod.tune(grid)
    from optuna.trial import TrialState

    states = [t.state for t in search_mod.open_study(grid, "ce")[0].trials]
    assert states[:2] == [TrialState.COMPLETE, TrialState.RUNNING] and states[2:] == [TrialState.FAIL]
    assert [r["trial"] for r in trial_records(grid["out_dir"], "ce")] == [0], "never more than the budget"


def test_a_changed_space_names_the_parameter(tmp_path, monkeypatch):
    monkeypatch.setattr(search_mod, "_objective", _fake_objective)
    path = grid_with_search(tmp_path)
    search_mod.tune(load_grid(path))
    raw = yaml.safe_load(path.read_text())
    raw["methods"]["kd"]["space"]["method.kd_weight"]["high"] = 5.0
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"made for another search: parameter\(s\) \['method\.kd_weight'\] changed"):
        search_mod.tune(load_grid(path))
    (Path(raw["work_dir"]) / "search.db").unlink()  # a fresh checkout: the committed records hold the old candidates
    with pytest.raises(ConfigError, match=r"committed trial 0 of 'kd' is not the sobol candidate.*\['method\.kd_weight'\]"):
        search_mod.tune(load_grid(path))


@pytest.mark.parametrize(
    "url", ["postgresql://hkt:s3cret-pw@127.0.0.1:1/hkt", "postgresql+psycopg://hkt:s3cret-pw@no-such-host.invalid/hkt"]
)
def test_an_unreachable_database_names_the_host_never_the_password(tmp_path, url):
    grid = load_grid(
        grid_with_search(
            tmp_path, {"trials": 2, "tuning_seeds": [7], "storage": url, "space": {"optim.lr": {"low": 0.001, "high": 0.05, "log": True}}}
        )
    )
    with pytest.raises(ConfigError) as err:
        search_mod.open_study(grid, "kd")
    message = str(err.value)
    assert "\n" not in message and "s3cret-pw" not in message and "***" in message
    assert ("127.0.0.1" in message and "1" in message) or "no-such-host.invalid" in message


def test_a_running_trial_of_another_machine_is_reported_with_its_host_and_left_to_it(tmp_path, monkeypatch, capsys):
    grid = load_grid(grid_with_search(tmp_path, methods={"ce": {"method": {"name": "ce"}, "parent": {"arch": None, "weights": None}}}))
    monkeypatch.setattr(search_mod, "_objective", _fake_objective)
    study, dists = search_mod.open_study(grid, "ce")
    study.ask(dists).set_user_attr("host", "gpu-node-7")  # trial 0, running there
    search_mod.tune(grid)
    assert "tune ce: trial 0 belongs to host gpu-node-7; it resumes there" in capsys.readouterr().out
    assert [r["trial"] for r in trial_records(grid["out_dir"], "ce")] == [1], "trial 0 is left to its host"


def test_a_truncated_trial_record_is_named_and_its_trial_redone(tmp_path, monkeypatch, caplog):
    search = {"trials": 3, "tuning_seeds": [7], "space": {"optim.lr": {"low": 0.001, "high": 0.05, "log": True}}}
    ce = {"ce": {"method": {"name": "ce"}, "parent": {"arch": None, "weights": None}}}
    monkeypatch.setattr(search_mod, "_objective", _fake_objective)
    grid = load_grid(grid_with_search(tmp_path, search, ce))
    search_mod.tune(grid)
    record = Path(grid["out_dir"]) / "search" / "ce" / "trial1.json"
    whole = record.read_text()
    record.write_text(whole[:50])  # a full disk, on a fresh checkout (no study database)
    (Path(grid["work_dir"]) / "search.db").unlink()
    with caplog.at_level("WARNING"):
        search_mod.tune(grid)
    assert f"{record} cannot be read" in caplog.text
    assert record.read_text() == whole, "trial 1 redone with its own candidate, the record written again"
    study, _ = search_mod.open_study(grid, "ce")
    assert [t.number for t in study.trials] == [0, 1, 2]
