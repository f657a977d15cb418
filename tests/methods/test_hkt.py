"""``hkt``'s options: the learned adapter, the LePoKet attention and its initialisation, gate schedules."""

import math

import pytest
import torch
from torch import nn

from hkt.core.genetic_attention import LePoKetAttention, build_attention
from hkt.core.transfer import GeneShapeError, build_adapter
from hkt.methods import build_method
from hkt.models import build_model


def test_learned_adapter_is_trainable_and_the_identity_at_step_0():
    x = torch.randn(3, 4, 5, 5)
    conv = build_adapter((4, 5, 5), (4, 5, 5), kind="learned")
    assert isinstance(build_adapter((4, 5, 5), (4, 5, 5)), nn.Identity) and sum(p.numel() for p in conv.parameters()) == 4 * 4 + 4
    assert torch.allclose(conv(x), x)
    assert torch.allclose(build_adapter((6,), (6,), kind="learned")(x[:, :, 0, 0].repeat(1, 2)[:, :6]), x[:, :, 0, 0].repeat(1, 2)[:, :6])
    torch.manual_seed(0)
    from hkt.models import build_model

    parent, child = build_model("resnet14", width=16).eval(), build_model("resnet8", width=16).eval()
    x = torch.randn(4, 3, 32, 32)
    y = torch.randint(0, 10, (4,))
    auto = build_method("hkt", child, parent, x[:2], genes=["layer1", "layer2"]).eval()
    learned = build_method("hkt", child, parent, x[:2], genes=["layer1", "layer2"], adapter="learned").eval()
    assert all(isinstance(t, nn.Identity) for t in auto.inheritance.transfers)
    assert all(any(p.requires_grad for p in t.parameters()) for t in learned.inheritance.transfers)
    a, b = auto.forward_train(x, y)[1], learned.forward_train(x, y)[1]
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_lepoket_attention_by_hand_for_vectors_and_maps():
    ga = LePoKetAttention(2, rank=2, lam=0.5)
    with torch.no_grad():
        for w in (ga.w_q, ga.w_k, ga.w_v):
            w.weight.copy_(torch.eye(2))
        for layer in (ga.mlp[0], ga.mlp[2]):
            layer.weight.zero_()
            layer.bias.zero_()  # MLP gate = sigmoid(0) = 0.5
    q, v = torch.tensor([[1.0, 0.0]]), torch.tensor([[2.0, 1.0]])
    a = 0.5 * (1 / (1 + math.exp(-2.0 / math.sqrt(2))) + 0.5)  # <Q, K> = 2, d = 2
    expected = q + 0.5 * a * (v - q)
    assert torch.allclose(ga(q, v), expected, atol=1e-6) and ga.gate.item() == pytest.approx(0.5 * a, rel=1e-6)
    assert isinstance(ga.lam, nn.Parameter)
    maps = build_attention("lepoket", 4, 4, 0.6)
    out = maps(torch.randn(2, 4, 5, 5), torch.randn(2, 4, 5, 5))
    assert out.shape == (2, 4, 5, 5) and maps.gate.shape == (2, 1, 5, 5)


def test_hkt_with_lepoket_learns_lambda_and_logs_its_gate():
    torch.manual_seed(0)
    parent, child = build_model("resnet14", width=16).eval(), build_model("resnet8", width=8)
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    method = build_method("hkt", child, parent, x[:2], genes=["layer2", "avgpool"], attention="lepoket").train()
    _, losses = method.forward_train(x, y)
    sum(losses.values()).backward()
    assert method.inheritance.attentions[1].lam.grad is not None
    assert set(method.log_values()) == {"gate/layer2", "gate/avgpool"}
    with pytest.raises(GeneShapeError, match="cannot align"):
        build_method("hkt", child, parent, x[:2], genes=["layer3:avgpool"], attention="lepoket")


def test_gate_schedule_moves_the_inheritance_rate_from_lam_to_lam_final():
    torch.manual_seed(0)
    parent, child = build_model("resnet14", width=16).eval(), build_model("resnet8", width=16)
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    method = build_method(
        "hkt", child, parent, x[:2], genes=["avgpool"], attention="static", parent_weight=0.8, lam=0.8, lam_schedule="linear", lam_final=0.0
    )
    for step, expected in ((0, 0.8), (5, 0.4), (10, 0.0)):
        method.on_train_step(step, 11, 0)
        method.forward_train(x, y)
        assert method.log_values()["gate/avgpool"].item() == pytest.approx(expected, abs=1e-6)
    method.on_train_step(10, 11, 0)
    r = method.inheritance(parent, child, x)
    assert torch.allclose(r.inherited, r.child, atol=1e-6)  # weaned off: the mix is the child's own feature
    cos = build_method("hkt", child, parent, x[:2], genes=["avgpool"], lam=0.6, lam_schedule="cosine", lam_final=0.2)
    cos.on_train_step(5, 11, 0)
    assert cos.log_values()["lam/scale"].item() == pytest.approx((0.6 - 0.4 * 0.5) / 0.6)
    with pytest.raises(ValueError, match="set method.lam_final"):
        build_method("hkt", child, parent, x[:2], genes=["avgpool"], lam_schedule="linear")


def test_lepoket_layers_start_kaiming_normal_as_the_authors_code():
    c = 64
    weights = {name: [] for name in ("w_q", "w_k", "w_v", "mlp0", "mlp2")}
    for seed in range(20):
        torch.manual_seed(seed)
        ga = LePoKetAttention(c, rank=2)
        for name, layer in (("w_q", ga.w_q), ("w_k", ga.w_k), ("w_v", ga.w_v), ("mlp0", ga.mlp[0]), ("mlp2", ga.mlp[2])):
            weights[name].append(layer.weight.detach().flatten())
    for name, w in weights.items():  # kaiming_normal_ (fan-in, gain sqrt 2): std sqrt(2 / 64) = 0.177
        assert torch.cat(w).std().item() == pytest.approx((2 / c) ** 0.5, rel=0.08), name
