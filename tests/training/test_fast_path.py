"""Fast paths: bf16 autocast end to end for ce / kd / hkt on the CPU, channels_last end to end, and the bad inputs
that must fail before training (compile without a working backend or with hook-based methods, bf16 on a GPU
without it, channels_last on 5-D inputs)."""

import math

import pytest
import torch

from hkt.config import ConfigError, load_config
from hkt.training.fast_path import FastPathError
from hkt.training.module import MethodModule
from hkt.training.run import build, fit

FEW = ["trainer.max_epochs=1", "trainer.limit_train_batches=3", "trainer.limit_val_batches=2"]


@pytest.mark.parametrize("method", ["{name: ce}", "{name: kd}", "{name: hkt, genes: [layer2, avgpool]}"])
def test_bf16_mixed_runs_end_to_end_on_cpu(tiny_fashion, method, monkeypatch):
    """Autocast really runs: inside every training step the child's output is bfloat16 (float32 without the option)."""
    seen = []
    step = MethodModule.training_step

    def spy(self, batch, batch_idx):
        handle = self.method.child.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
        try:
            return step(self, batch, batch_idx)
        finally:
            handle.remove()

    monkeypatch.setattr(MethodModule, "training_step", spy)
    parent = [] if "ce" in method else ["parent.arch=resnet8", "parent.width=8"]
    rec = fit(load_config(None, tiny_fashion + FEW + parent + [f"method={method}", "trainer.precision=bf16-mixed"]))
    assert math.isfinite(rec["test_acc"])
    assert len(seen) >= 3 and set(seen) == {torch.bfloat16}, seen
    seen.clear()
    fit(load_config(None, tiny_fashion + FEW + parent + [f"method={method}", f"out_dir={tiny_fashion[-1].split('=', 1)[1]}_fp32"]))
    assert seen and set(seen) == {torch.float32}


def test_channels_last_runs_hkt_end_to_end(tiny_fashion):
    cfg = load_config(
        None, tiny_fashion + FEW + ["parent.arch=resnet8", "method={name: hkt, genes: [layer1, avgpool]}", "channels_last=true"]
    )
    _, module = build(cfg)
    assert module.method.child.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert math.isfinite(fit(cfg)["test_acc"])


def test_fast_path_bad_input_fails_before_training(tiny_fashion, monkeypatch):
    with pytest.raises(FastPathError, match=r"cannot speed up HKT.*works for the methods without genes \(ce, deit, dist, dkd, kd\)"):
        build(load_config(None, tiny_fashion + ["parent.arch=resnet8", "method={name: hkt, genes: [avgpool]}", "compile=true"]))

    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(torch, "compile", broken)
    with pytest.raises(
        FastPathError, match=r"torch\.compile does not work here \(RuntimeError: no C\+\+ compiler found\)\. Set compile: false"
    ):
        build(load_config(None, tiny_fashion + ["compile=true"]))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "an old GPU")
    with pytest.raises(FastPathError, match=r"bf16-mixed needs a GPU with bfloat16 support \(an old GPU has none\)"):
        build(load_config(None, tiny_fashion + ["trainer.precision=bf16-mixed", "trainer.accelerator=gpu"]))
    with pytest.raises(ConfigError, match=r"'channels_last' must be true or false"):
        load_config(None, ["channels_last=yes please"])


def test_channels_last_refuses_pair_inputs():
    from hkt.methods import build_method
    from hkt.models import build_model
    from hkt.training.fast_path import channels_last

    method = build_method("ce", build_model("torchvision:raft_small", iterations=2), None, None)
    with pytest.raises(FastPathError, match=r"needs 4-D \(B, C, H, W\) inputs; this task's inputs are \(1, 2, 3, 128, 128\)"):
        channels_last(method, torch.zeros(1, 2, 3, 128, 128))


def test_gpu_benchmark_is_ready_smoke_on_cpu(tmp_path):
    """benchmarks/gpu_step.py runs end to end (tiny batches, on the CPU) so it is ready when a GPU is lent."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_step.py"
    import os

    # one thread: beside another busy process, OpenMP's spinning threads made this 13 s run take over 300 s
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(script), "--smoke", "--out", str(tmp_path / "smoke")], capture_output=True, text=True, timeout=1800, env=env
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "smoke.json").read_text())
    assert (
        result["smoke"]
        and len(result["train"]) == 16
        and {r["runtime"].split(" ")[0] for r in result["export_latency"]} == {"eager", ".pt2", "onnxruntime"}
    )
