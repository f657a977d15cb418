"""``deit`` as facebookresearch/deit's ``DistillationLoss`` computes it, by hand, and on a tiny timm distilled ViT."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hkt.cli import _methods
from hkt.methods import build_method
from hkt.methods.deit import deit_distillation


def test_hard_and_soft_terms_by_hand():
    student, teacher = torch.tensor([[2.0, 0.0, 1.0], [0.0, 1.0, 0.0]]), torch.tensor([[0.0, 0.0, 5.0], [3.0, 0.0, 0.0]])
    # hard: CE against the parent's argmax (classes 2 and 0)
    p = torch.softmax(student, 1).tolist()
    by_hand = -(math.log(p[0][2]) + math.log(p[1][0])) / 2
    assert deit_distillation(student, teacher, "hard", 1.0).item() == pytest.approx(by_hand, rel=1e-6)
    # soft at tau 2: summed KL(teacher || student) * tau^2 / numel (the authors' normalisation), not the batch mean
    ps, pt = torch.softmax(student / 2, 1).tolist(), torch.softmax(teacher / 2, 1).tolist()
    kl = sum(pt[i][k] * math.log(pt[i][k] / ps[i][k]) for i in range(2) for k in range(3))
    assert deit_distillation(student, teacher, "soft", 2.0).item() == pytest.approx(kl * 4 / 6, rel=1e-5)


def test_alpha_weighs_the_task_and_distillation_terms():
    child, parent = nn.Linear(4, 3), nn.Linear(4, 3)
    x, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    out, losses = build_method("deit", child, parent, x, alpha=0.3).forward_train(x, y)
    assert set(losses) == {"task", "deit"}
    assert losses["task"].item() == pytest.approx(0.7 * F.cross_entropy(out, y).item(), rel=1e-6)
    assert losses["deit"].item() == pytest.approx(0.3 * F.cross_entropy(out, parent(x).argmax(1)).item(), rel=1e-6)
    with pytest.raises(ValueError, match="alpha .* must lie in \\[0, 1\\]"):
        build_method("deit", child, parent, x, alpha=1.5)
    with pytest.raises(ValueError, match="distillation must be 'hard' or 'soft'"):
        build_method("deit", child, parent, x, distillation="medium")


def test_a_distilled_timm_vit_trains_its_distillation_head_and_deploys_the_average():
    pytest.importorskip("timm")
    from hkt.models import build_model

    options = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3)
    child = build_model("timm:deit_tiny_distilled_patch16_224", options=options)
    parent = build_model("resnet8", width=4)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    method = build_method("deit", child, parent, x)
    assert "head_dist" in method.reads
    method.train()
    out, losses = method.forward_train(x, y)
    feats = child.forward_features(x)
    cls, dist = child.head(feats[:, 0]), child.head_dist(feats[:, 1])
    torch.testing.assert_close(out, (cls + dist) / 2)  # timm's inference output: the heads averaged
    torch.testing.assert_close(losses["task"], 0.5 * F.cross_entropy(cls, y))
    torch.testing.assert_close(losses["deit"], 0.5 * F.cross_entropy(dist, parent(x).argmax(1)))
    sum(losses.values()).backward()
    assert child.head_dist.weight.grad.abs().sum() > 0 and child.head.weight.grad.abs().sum() > 0
    exported = method.export_child()
    torch.testing.assert_close(exported(x), (cls + dist).detach() / 2)


def test_hkt_methods_deit_prints_its_reference_and_defaults():
    text = _methods("deit")
    assert "facebookresearch/deit" in text and "DistillationLoss" in text and "averaged" in text
    assert "alpha: 0.5" in text and "distillation: 'hard'" in text and "tau: 1.0" in text
