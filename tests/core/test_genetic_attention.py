"""Each GA variant against values computed by hand."""

import math

import pytest
import torch

from hkt.core import build_attention, gated_attention, learned_attention, static_attention


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_gated_vector_matches_hand_values():
    q = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    v = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    out, gate = gated_attention(q, v, lam=0.6)
    # sample 0: <q,v> = 2, s = sigmoid(2/sqrt 2); sample 1: <q,v> = 0, s = 0.5
    g0 = 0.6 * (1 - sigmoid(2 / math.sqrt(2)))
    g1 = 0.6 * 0.5
    assert gate.shape == (2, 1)
    assert gate[:, 0].tolist() == pytest.approx([g0, g1], abs=1e-6)
    assert out.flatten().tolist() == pytest.approx([1 + g0, 1 - g0, 1 - g1, g1], abs=1e-6)
    # the reference's two-step form: GA = s v + (1 - s) q, out = q + lam (v - GA)
    s = torch.sigmoid((q * v).sum(1, keepdim=True) / math.sqrt(2))
    assert torch.allclose(out, q + 0.6 * (v - (s * v + (1 - s) * q)))


def test_gated_map_has_one_gate_per_position():
    q = torch.zeros(1, 2, 1, 2)
    q[0, :, 0, 0] = torch.tensor([1.0, 0.0])
    q[0, :, 0, 1] = torch.tensor([3.0, 0.0])
    v = torch.zeros(1, 2, 1, 2)
    v[0, :, 0, 0] = torch.tensor([0.0, 2.0])
    v[0, :, 0, 1] = torch.tensor([1.0, 0.0])
    out, gate = gated_attention(q, v, lam=0.5)
    assert gate.shape == (1, 1, 1, 2)
    g = [0.5 * (1 - 0.5), 0.5 * (1 - sigmoid(3 / math.sqrt(2)))]
    assert gate.flatten().tolist() == pytest.approx(g, abs=1e-6)
    assert out[0, :, 0, 0].tolist() == pytest.approx([1 - g[0], 2 * g[0]], abs=1e-6)
    assert out[0, :, 0, 1].tolist() == pytest.approx([3 - 2 * g[1], 0.0], abs=1e-6)


def test_static_is_fixed_blend():
    q, v = torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, -1.0]])
    out, gate = static_attention(q, v, parent_weight=0.7)
    assert out.flatten().tolist() == pytest.approx([0.7 * 3 + 0.3 * 1, 0.7 * -1 + 0.3 * 2])
    assert gate.item() == pytest.approx(0.7)


def test_learned_gate_formula_and_initial_value():
    q, v = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    out, gate = learned_attention(q, v, torch.tensor([[math.log(3.0)]]), lam=0.6)  # sigmoid = 0.75
    assert gate.item() == pytest.approx(0.45)
    assert out.flatten().tolist() == pytest.approx([0.55, 0.45])
    module = build_attention("learned", channels=2, rank=2)
    module(q, v)
    assert module.gate.item() == pytest.approx(0.3)  # a = 0.5 at initialisation
    assert sum(p.numel() for p in module.parameters()) == 5  # linear on [q, v]: 4 weights + bias


def test_unknown_attention_is_named():
    with pytest.raises(ValueError, match="gated, static, learned, lepoket"):
        build_attention("softmax", 4, 2)
