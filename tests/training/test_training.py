"""Lightning training on a real Fashion-MNIST slice: fit, resume, NaN guard, frozen-parent guard, export."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hkt.cli import main
from hkt.config import load_config
from hkt.methods import CE
from hkt.training.history import History
from hkt.training.module import NonFiniteLossError, ParentInOptimizerError
from hkt.training.run import build, fit, make_trainer


def child_weights(run: Path, which: str = "last") -> dict:
    state = torch.load(run / "checkpoints" / f"{which}.ckpt", weights_only=True)["state_dict"]
    return {k: v for k, v in state.items() if k.startswith("method.child.")}


def test_hkt_fit_writes_results_and_resumes_exactly(tiny_fashion, tmp_path):
    parent = ["parent.arch=resnet8", "parent.width=8", "method={name: hkt, genes: [layer2, avgpool]}"]
    straight = load_config(None, tiny_fashion + parent + ["trainer.max_epochs=2", f"out_dir={tmp_path / 'straight'}"])
    rec = fit(straight)
    assert len(rec["epochs"]) == 2 and 0.0 <= rec["test_acc"] <= 1.0
    assert {"gate/layer2", "gate/avgpool", "val/acc", "train/inherit"} <= set(rec["epochs"][-1])
    assert json.loads((tmp_path / "straight" / "result.json").read_text())["best_epoch"] in (0, 1)

    # the same run interrupted at the start of its second epoch, then resumed
    resumed = load_config(None, tiny_fashion + parent + ["trainer.max_epochs=2", f"out_dir={tmp_path / 'resumed'}"])

    def crash(self, trainer, module):
        if trainer.current_epoch == 1:
            raise KeyboardInterrupt  # Lightning's own handling of Ctrl-C; a kill -9 is tested in test_recovery.py

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(History, "on_train_epoch_start", crash, raising=False)
        with pytest.raises((KeyboardInterrupt, SystemExit)):
            fit(resumed)
    assert not (tmp_path / "resumed" / "result.json").exists()
    rec2 = fit(resumed, resume=True)
    assert [e["epoch"] for e in rec2["epochs"]] == [0, 1]
    a, b = child_weights(tmp_path / "straight"), child_weights(tmp_path / "resumed")
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a), "resume is not exact"

    with pytest.raises(FileExistsError, match="--resume"):
        fit(resumed)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny_fashion, tmp_path, monkeypatch):
    cfg = load_config(None, tiny_fashion + ["trainer.max_epochs=1"])
    fit(cfg)
    run = Path(cfg["out_dir"])
    good = child_weights(run)
    (run / "result.json").unlink()
    calls = []

    def diverging(self, x, y):  # a few good steps, then the loss blows up
        out, losses = CE_forward(self, x, y)
        calls.append(1)
        return out, {k: v * (float("nan") if len(calls) > 3 else 1.0) for k, v in losses.items()}

    CE_forward = CE.forward_train
    monkeypatch.setattr(CE, "forward_train", diverging)
    cfg = load_config(None, tiny_fashion + ["trainer.max_epochs=3"])
    with pytest.raises(NonFiniteLossError, match=r"non-finite training loss.*last good checkpoint \(end of epoch \d+\) is kept"):
        fit(cfg, resume=True)
    kept = child_weights(run)
    assert all(torch.equal(good[k], kept[k]) for k in good)
    assert all(torch.isfinite(v.float()).all() for v in kept.values())


def test_parent_parameters_in_optimizer_are_refused(tiny_fashion):
    cfg = load_config(None, tiny_fashion + ["parent.arch=resnet8", "method={name: kd}"])
    data, module = build(cfg)
    module.method.parent.requires_grad_(True)
    trainer, _, _ = make_trainer(cfg)
    with pytest.raises(ParentInOptimizerError, match="parent parameters would be trained"):
        trainer.fit(module, datamodule=data)


def test_cli_fit_export_and_errors(tiny_fashion, tmp_path, capsys):
    args = ["--" + o.replace("=", " ", 1) for o in tiny_fashion]
    flat = [part for a in args for part in a.split(" ", 1)]
    assert main(["fit", *flat, "--parent.arch", "resnet8", "--method", "{name: hkt, genes: [avgpool], attention: learned}"]) == 0
    assert main(["export", *flat, "--parent.arch", "resnet8", "--method", "{name: hkt, genes: [avgpool], attention: learned}"]) == 0
    report = json.loads(capsys.readouterr().out.split("\n}\n")[-2] + "\n}")
    assert main(["test", *flat, "--parent.arch", "resnet8", "--method", "{name: hkt, genes: [avgpool], attention: learned}"]) == 0
    assert '"test/acc"' in capsys.readouterr().out
    assert report["formats"]["safetensors"]["max_abs_diff"] == 0.0
    assert report["formats"]["onnx"]["max_abs_diff"] <= 1e-4 and report["formats"]["pt2"]["max_abs_diff"] <= 1e-5
    assert report["params"] == sum(p.numel() for p in __import__("hkt").build_model("resnet8", width=4, in_channels=1).parameters())
    assert main(["fit", *flat, "--data.bach_size", "3"]) == 2
    assert "batch_size" in capsys.readouterr().err


SPY = """
import os, sys
from hkt.data import datamodule

order = datamodule.PositionSampler.__iter__


def spy(self):  # what each rank's sampler hands out, one line per epoch order
    items = list(order(self))
    with open(os.path.join(os.environ["HKT_TEST_SHARDS"], f"rank{self.rank}.txt"), "a") as f:
        f.write(" ".join(str(i) for i, _, _ in items) + "\\n")
    return iter(items)


datamodule.PositionSampler.__iter__ = spy
from hkt.cli import main

raise SystemExit(main(sys.argv[1:]))
"""


def test_ddp_two_processes_on_cpu(tiny_fashion, tmp_path):
    """Lightning's DDP (gloo) with two CPU processes, through the command line: the two ranks train on disjoint
    halves of the training split (512 images, 256 each), and the run finishes with a finite result."""
    overrides = tiny_fashion + [
        "trainer.strategy=ddp",
        "trainer.devices=2",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=3",
        "trainer.limit_val_batches=2",
        "parent.arch=resnet8",
        "method={name: hkt, genes: [avgpool]}",
    ]
    (tmp_path / "spy_fit.py").write_text(SPY)  # Lightning relaunches this script for rank 1
    shards = tmp_path / "shards"
    shards.mkdir()
    env = {**os.environ, "HKT_TEST_SHARDS": str(shards), "OMP_NUM_THREADS": "1"}  # two ranks on two cores
    proc = subprocess.run(
        [sys.executable, str(tmp_path / "spy_fit.py"), "fit", *overrides], capture_output=True, text=True, timeout=1800, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = {r: {int(i) for line in (shards / f"rank{r}.txt").read_text().split("\n") for i in line.split()} for r in (0, 1)}
    assert len(seen[0]) == len(seen[1]) == 256 and not seen[0] & seen[1], "each rank a disjoint half"
    rec = json.loads((Path(tiny_fashion[-1].split("=", 1)[1]) / "result.json").read_text())
    assert math.isfinite(rec["test_acc"])
