"""``hkt compare`` on a seconds-long grid: prepare runs, methods x seeds, skip when finished, summary."""

import json
import shutil

import pytest
import yaml

from hkt.cli import main
from hkt.compare.records import unhashed
from hkt.compare.spec import load_grid, run_config
from hkt.compare.summary import paired
from hkt.config import ConfigError


def write_grid(tmp_path, methods=None):
    tiny = {"name": "fashion_mnist", "train_subset": 256, "val_size": 128, "test_subset": 128, "batch_size": 64, "num_workers": 0}
    grid = {
        "out_dir": str(tmp_path / "results"),
        "work_dir": str(tmp_path / "work"),
        "seeds": [0, 1],
        "common": {
            "data": tiny,
            "parent": {"arch": "resnet8", "width": 8, "weights": "@parent"},
            "child": {"arch": "resnet8", "width": 4, "weights": "@base"},
            "trainer": {"max_epochs": 1, "enable_progress_bar": False, "enable_model_summary": False},
        },
        "prepare": {
            "parent": {
                "parent": {"arch": None, "weights": None},
                "child": {"arch": "resnet8", "width": 8, "weights": None},
                "method": {"name": "ce"},
            },
            "base": {"parent": {"arch": None, "weights": None}, "child": {"weights": None}, "method": {"name": "ce"}},
        },
        "methods": methods
        or {
            "ce": {"method": {"name": "ce"}, "parent": {"arch": None, "weights": None}},
            "hkt": {"method": {"name": "hkt", "genes": ["avgpool"]}},
        },
    }
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


def test_grid_runs_skips_finished_and_summarises(tmp_path, capsys):
    path = write_grid(tmp_path)
    assert main(["compare", "-c", str(path)]) == 0
    results = tmp_path / "results"
    records = {p.relative_to(results).as_posix() for p in results.glob("runs/*/*.json")}
    assert records == {"runs/ce/seed0.json", "runs/ce/seed1.json", "runs/hkt/seed0.json", "runs/hkt/seed1.json"}
    run = json.loads((results / "runs/hkt/seed1.json").read_text())
    assert run["config"]["seed"] == 1 and run["config"]["child"]["weights"].endswith("prepare/base/checkpoints/best.ckpt")
    assert "gate/avgpool" in run["epochs"][0] and run["median_step_s"] > 0
    summary = (results / "summary.md").read_text()
    assert "| hkt | 2 |" in summary and "vs ce" in summary and "### Verdicts on test_acc" in summary
    assert (results / "val_curves.png").stat().st_size > 1000 and (results / "gates.png").is_file()
    # a second call trains nothing: every run is finished
    before = {p: p.stat().st_mtime for p in (tmp_path / "work").rglob("result.json")}
    assert main(["compare", "-c", str(path)]) == 0
    assert before == {p: p.stat().st_mtime for p in (tmp_path / "work").rglob("result.json")}
    # a fresh checkout (no work_dir runs) resumes from the committed records: nothing is trained again
    shutil.rmtree(tmp_path / "work" / "runs")
    (results / "summary.md").unlink()
    assert main(["compare", "-c", str(path)]) == 0
    assert not (tmp_path / "work" / "runs").exists() and (results / "summary.md").read_text() == summary
    # a record truncated by a full disk is named and its run redone (here retrained: the work_dir is gone)
    whole = (results / "runs/ce/seed1.json").read_text()
    (results / "runs/ce/seed1.json").write_text(whole[:200])
    capsys.readouterr()
    assert main(["compare", "-c", str(path)]) == 0
    assert f"{results / 'runs/ce/seed1.json'} cannot be read" in capsys.readouterr().err
    redone = json.loads((results / "runs/ce/seed1.json").read_text())
    assert redone["test_acc"] == json.loads(whole)["test_acc"]  # retrained to the same numbers (timings aside)
    # every parent-reading run names its parent by content; two contents under one parent spec stop the summary
    hashes = {json.loads((results / f"runs/hkt/seed{k}.json").read_text())["parent_weights"] for k in (0, 1)}
    assert len(hashes) == 1 and "Parent weights, by content" in summary and next(iter(hashes))[:12] in summary
    assert unhashed(load_grid(path)) == [] and "do not name its weights" not in summary  # every new record names it
    other = json.loads((results / "runs/hkt/seed0.json").read_text())
    (results / "runs/hkt/seed0.json").write_text(json.dumps({k: v for k, v in other.items() if k != "parent_weights"}))
    assert main(["compare", "-c", str(path), "--summarize-only"]) == 0  # an old record without the hash is named
    assert (
        "do not name its weights (written before records named them; their parent rests on the grid's spec): 1, runs/hkt/seed 0."
        in (results / "summary.md").read_text()
    )
    (results / "runs/hkt/seed0.json").write_text(json.dumps({**other, "parent_weights": "0" * 32}))
    assert main(["compare", "-c", str(path), "--summarize-only"]) == 2
    assert "was read with 2 different weights (000000000000: runs/hkt/seed0" in capsys.readouterr().err
    (results / "runs/hkt/seed0.json").write_text(json.dumps(other, indent=1, default=str))
    # a committed record of another config is named, never kept or replaced silently
    edited = json.loads((results / "runs/hkt/seed1.json").read_text())
    edited["config"]["optim"]["lr"] = 0.5
    (results / "runs/hkt/seed1.json").write_text(json.dumps(edited))
    assert main(["compare", "-c", str(path)]) == 2
    assert "runs/hkt/seed1.json was run with another config (optim differ" in capsys.readouterr().err


def test_every_run_config_is_validated_before_training(tmp_path):
    path = write_grid(tmp_path, {"kd": {"method": {"name": "kd", "temprature": 4}}})
    with pytest.raises(ConfigError, match="temperature"):
        load_grid(path)
    path = write_grid(tmp_path, {"kd": {"method": {"name": "kd"}, "child": {"weights": "@nope"}}})
    with pytest.raises(ConfigError, match="refers to no prepare run"):
        load_grid(path)
    grid = load_grid(write_grid(tmp_path))
    with pytest.raises(FileNotFoundError, match="has not finished"):
        run_config(grid, "hkt", 0)


def test_paired_t_test_by_hand():
    a, b = {0: 0.90, 1: 0.92, 2: 0.91}, {0: 0.89, 1: 0.90, 2: 0.90}
    d = paired(a, b)
    # diffs 0.01, 0.02, 0.01: mean 0.01333, sd 0.005774, t = mean / (sd / sqrt 3) = 4.0, df 2 -> p = 0.0572
    assert d["n"] == 3 and d["mean_diff"] == pytest.approx(0.013333, abs=1e-5)
    assert d["p_value"] == pytest.approx(0.0572, abs=5e-4)
    assert paired({0: 1.0}, {0: 0.5}) is None


def test_a_retrained_prepare_run_must_reproduce_its_committed_record(tmp_path):
    from hkt.compare.records import check_reproduced

    committed = {
        "val_acc_best": 0.884,
        "test_acc": 0.887,
        "fit_wall_s": 565.0,
        "epochs": [{"epoch": 0, "val/acc": 0.884, "epoch_s": 500.0}],
    }
    path = tmp_path / "parent.json"
    path.write_text(json.dumps(committed))
    again = dict(committed, fit_wall_s=612.0, epochs=[{"epoch": 0, "val/acc": 0.884, "epoch_s": 530.0}])
    check_reproduced(again, path)  # only the times differ
    check_reproduced(committed, tmp_path / "none.json")  # nothing committed yet
    with pytest.raises(RuntimeError, match=r"prepare run parent did not reproduce .*test_acc: committed 0.887, now 0.8869"):
        check_reproduced(dict(again, test_acc=0.8869), path)
