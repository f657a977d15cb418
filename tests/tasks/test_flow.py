"""Optical flow on tiny inputs: .flo IO, the synthetic generator's ground truth (verified by warping),
metrics and the sequence loss against hand-computed values, RAFT padding, HKT through RAFT's repeated and
2B-row genes, the real evaluation pairs, bad input, and fit / export through the command line."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hkt.cli import main
from hkt.data.flow import FlowData, TorchvisionFlow, _to_pair, grove3, motorcycle
from hkt.data.flow_io import FloError, read_flo, write_flo
from hkt.data.flow_synthetic import SyntheticFlow
from hkt.data.sources import DatasetNotFoundError
from hkt.methods import build_method
from hkt.models import build_model
from hkt.tasks import Flow
from hkt.tasks.flow import FlowError, sequence_loss

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def test_flo_round_trip_and_bad_files(tmp_path):
    flow = np.random.default_rng(0).normal(size=(2, 5, 7)).astype(np.float32)
    valid = np.ones((5, 7), bool)
    valid[1, 2] = False
    write_flo(tmp_path / "a.flo", flow, valid)
    back, back_valid = read_flo(tmp_path / "a.flo")
    assert np.array_equal(back_valid, valid) and np.array_equal(back[:, valid], flow[:, valid]) and (back[:, ~valid] == 0).all()
    raw = (tmp_path / "a.flo").read_bytes()
    (tmp_path / "magic.flo").write_bytes(b"\x00\x00\x00\x00" + raw[4:])
    with pytest.raises(FloError, match="magic number"):
        read_flo(tmp_path / "magic.flo")
    (tmp_path / "short.flo").write_bytes(raw[:-8])
    with pytest.raises(FloError, match="truncated"):
        read_flo(tmp_path / "short.flo")
    gt, gt_valid = read_flo(SHARED / "middlebury" / "other-gt-flow" / "Grove3" / "flow10.flo")
    assert gt.shape == (2, 480, 640) and gt_valid.all() and 0 < np.abs(gt).max() < 30


def test_synthetic_ground_truth_is_verified_by_warping():
    data = SyntheticFlow(6, (128, 128), (0,), str(SHARED / "middlebury" / "other-gray-twoframes"))
    pair, (flow, valid) = data[0]
    assert pair.shape == (2, 3, 128, 128) and flow.shape == (2, 128, 128) and valid.dtype == torch.bool
    assert torch.equal(data[0][0], pair) and not torch.equal(data[(0, 1)][0], pair)  # seeded; fresh per epoch
    errors, baseline = [], []
    for i in range(6):
        pair, (flow, valid) = data[i]
        ys, xs = torch.meshgrid(torch.arange(128.0), torch.arange(128.0), indexing="ij")
        grid = torch.stack([(xs + flow[0]) / 127 * 2 - 1, (ys + flow[1]) / 127 * 2 - 1], -1)
        warped = F.grid_sample(pair[1:2, :1], grid[None], align_corners=True)[0, 0]  # frame 2 read at p + flow(p)
        errors.append((warped - pair[0, 0])[valid].abs().mean())
        baseline.append((pair[1, 0] - pair[0, 0])[valid].abs().mean())
        assert 0.3 < valid.float().mean() < 1.0  # occlusions and out-of-frame motion are masked, not everything
    assert max(errors) < 0.03 and all(b > 4 * e for b, e in zip(baseline, errors))  # bilinear resampling error only


def test_metrics_and_sequence_loss_by_hand():
    gt = torch.zeros(1, 2, 1, 4)
    gt[0, 0] = torch.tensor([10.0, 10.0, 100.0, 0.0])
    pred = gt.clone()
    pred[0, 0] += torch.tensor([0.5, 4.0, 4.0, 0.0])
    pred[0, 1, 0, 3] = 2.0
    valid = torch.tensor([[[True, True, True, False]]])
    # EPEs on valid pixels: 0.5, 4, 4 -> mean 8.5/3; <1px: 1/3; <3px: 1/3; <5px: 3/3;
    # Fl: >3 px and >5% of |gt|: pixel 2 (4 > 0.5) yes, pixel 3 (4 > 5) no -> 1/3
    expected = {"epe": 8.5 / 3, "px1": 1 / 3, "px3": 1 / 3, "px5": 1.0, "fl_all": 1 / 3}
    for kind, value in expected.items():
        m = FlowError(kind)
        m.update([torch.zeros_like(pred), pred], (gt, valid))  # the last iteration is scored
        assert m.compute().item() == pytest.approx(value, rel=1e-6), kind
    # sequence loss: gamma^1 * mean|0 - gt| + gamma^0 * mean|pred - gt|, masked, over (1, 2, 1, 4) elements
    first = (gt.abs() * valid[:, None]).sum() / 8
    last = ((pred - gt).abs() * valid[:, None]).sum() / 8
    assert sequence_loss([torch.zeros_like(pred), pred], (gt, valid), 0.8).item() == pytest.approx((0.8 * first + last).item())


def test_raft_pads_sizes_not_divisible_by_8_and_rejects_unequal_frames():
    torch.manual_seed(0)
    net = build_model("torchvision:raft_small", iterations=2).eval()
    with torch.no_grad():
        flows = net(torch.randn(1, 2, 3, 130, 133))
    assert len(flows) == 2 and flows[-1].shape == (1, 2, 130, 133)
    with pytest.raises(ValueError, match="differ in size"):
        _to_pair(np.zeros((130, 133)), np.zeros((130, 140)))
    with pytest.raises(ValueError, match=r"\(B, 2, 3, H, W\)"):
        net(torch.randn(1, 3, 128, 128))


def test_hkt_through_raft_genes_that_repeat_or_carry_both_frames():
    torch.manual_seed(0)
    parent = build_model("torchvision:raft_small", iterations=2).eval()  # a second raft_small: small and fast
    child = build_model("torchvision:raft_small", iterations=2)
    x = torch.randn(2, 2, 3, 128, 128)
    y = (torch.randn(2, 2, 128, 128), torch.ones(2, 128, 128, dtype=torch.bool))
    genes = ["net.feature_encoder", "net.context_encoder", "net.update_block.recurrent_block"]
    method = build_method("hkt", child, parent, x, Flow(), genes=genes, kd_weight=1.0)
    assert method.inheritance.one_pass is False  # the recurrent block runs once per iteration
    with torch.no_grad():
        r = method.eval().inheritance(parent, child, x)
        assert all(torch.equal(a, b) for a, b in zip(r.child, child(x)))  # the native path is the child alone
    out, losses = method.train().forward_train(x, y)
    sum(losses.values()).backward()
    assert set(losses) == {"child", "inherit", "parent", "kd"} and all(v.isfinite() for v in losses.values())
    assert len(out) == 2 and set(method.log_values()) == {f"gate/{g}" for g in genes}
    assert child.net.feature_encoder.convnormrelu[0].weight.grad is not None
    assert not any(p.grad is not None for p in parent.parameters())


class Recurrent(torch.nn.Module):
    """BatchNorm, then a cell applied twice: a gene at ``cell`` runs twice per forward."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.bn, self.cell, self.head = (
            torch.nn.Conv2d(3, 4, 1),
            torch.nn.BatchNorm2d(4),
            torch.nn.Conv2d(4, 4, 1),
            torch.nn.Linear(4, 2),
        )

    def forward(self, x):
        h = self.bn(self.stem(x))
        for _ in range(2):
            h = torch.tanh(self.cell(h))
        return self.head(h.mean((2, 3)))


def test_separate_passes_update_batchnorm_statistics_once():
    torch.manual_seed(0)
    parent, child = Recurrent().eval(), Recurrent()
    twin = Recurrent()
    twin.load_state_dict(child.state_dict())
    x, y = torch.randn(4, 3, 5, 5), torch.randint(0, 2, (4,))
    method = build_method("hkt", child, parent, x, genes=["cell"])
    assert method.inheritance.one_pass is False
    method.train().forward_train(x, y)
    twin.train()(x)  # one plain training forward
    assert child.bn.num_batches_tracked.item() == 1
    assert torch.allclose(child.bn.running_mean, twin.bn.running_mean) and torch.allclose(child.bn.running_var, twin.bn.running_var)


def test_real_pairs():
    pair, (flow, valid) = grove3(SHARED / "middlebury")
    assert pair.shape == (2, 3, 480, 640) and flow.shape == (2, 480, 640) and valid.all()
    pair, (flow, valid) = motorcycle()
    assert pair.shape[:2] == (2, 3) and (flow[1] == 0).all() and (flow[0][valid] <= 0).all() and 0.5 < valid.float().mean() < 1
    with pytest.raises(DatasetNotFoundError, match="Grove3 files missing"):
        grove3(SHARED / "nope")


def test_bad_data_configs(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="FlyingChairs.*set data.root"):
        TorchvisionFlow("chairs", tmp_path)
    with pytest.raises(ValueError, match="at least 128"):
        FlowData(crop=(64, 64))
    with pytest.raises(ValueError, match="raise data.eval_sets.grove3"):
        FlowData(train_size=2, val_size=1, test_size=1, eval_sets={"grove3": 0.25}, num_workers=0).setup()
    with pytest.raises(ValueError, match="unknown data.eval_sets"):
        FlowData(eval_sets={"chairs": 1.0})


def test_fit_and_export_flow_cli(tmp_path, capsys):
    args = [
        "-c",
        "configs/flow_raft_cpu.yaml",
        f"out_dir={tmp_path}",
        "data.train_size=8",
        "data.val_size=2",
        "data.test_size=2",
        "data.batch_size=4",
        "data.num_workers=0",
        "data.eval_sets={grove3: 0.5}",
        "parent.weights=null",
        "parent={arch: 'torchvision:raft_small', iterations: 2}",
        "child.iterations=2",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "method={name: hkt, genes: [net.feature_encoder, net.context_encoder]}",
    ]
    assert main(["fit", *args]) == 0
    rec = json.loads((tmp_path / "result.json").read_text())
    assert rec["test_synthetic_epe"] > 0 and rec["test_grove3_epe"] > 0 and 0 <= rec["test_grove3_fl_all"] <= 1 and "val_epe_best" in rec
    capsys.readouterr()
    assert main(["test", *args]) == 0
    tested = capsys.readouterr().out
    assert '"test/synthetic_epe"' in tested and '"test/grove3_fl_all"' in tested  # every evaluation set
    assert main(["export", *args, "--format", "safetensors", "pt2"]) == 0  # ONNX of RAFT: tests/test_export.py
    report = json.loads(capsys.readouterr().out)
    assert report["formats"]["safetensors"]["max_abs_diff"] == 0.0 and report["params"] == 990162
    assert report["formats"]["pt2"]["max_abs_diff"] <= 1e-5


def test_raft_encoder_genes_run_the_reference_and_the_log_says_why(caplog):
    """RAFT keeps its correlation pyramid on a module after each forward: one forward over two paths would leave a
    tensor there that nothing can read (a copy of the model, for export, would fail), so the reference runs."""
    torch.manual_seed(0)
    parent, child = build_model("torchvision:raft_small", iterations=2).eval(), build_model("torchvision:raft_small", iterations=2)
    x = torch.randn(2, 2, 3, 128, 128)
    with caplog.at_level(logging.WARNING, logger="hkt"):
        method = build_method("hkt", child, parent, x, Flow(), genes=["net.feature_encoder", "net.context_encoder"])
    assert not method.inheritance.one_pass and "'net.corr_block' keeps a tensor of its forward (attribute 'corr_pyramid')" in caplog.text
    copy.deepcopy(child)  # what export does: the rehearsal left no graph and no two-path tensor behind
