"""``kd`` as Hinton, RepDistiller and mdistiller train it, and its logit-standardisation recipe, by hand."""

import math
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hkt.losses import standardize
from hkt.methods import KD, build_method, kd_loss
from hkt.models import build_model


def tiny(feat: nn.Module, channels: int = 2, size: int = 2) -> nn.Module:
    """``feat`` (the gene) then a linear head on the flattened map."""
    return nn.Sequential(OrderedDict(feat=feat, head=nn.Sequential(nn.Flatten(), nn.Linear(channels * size * size, 3))))


def test_kd_by_hand():
    student, teacher = torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(3.0), 0.0]])
    by_hand = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)  # KL(p_teacher || p_student), T = 1
    assert kd_loss(student, teacher, 1.0).item() == pytest.approx(by_hand, rel=1e-6)
    p = torch.softmax(teacher / 2, 1)[0].tolist()  # T = 2: softened, times T^2
    assert kd_loss(student, teacher, 2.0).item() == pytest.approx(4 * sum(p[i] * math.log(p[i] / 0.5) for i in range(2)), rel=1e-6)
    child, parent = tiny(nn.Identity()), tiny(nn.Identity())
    x, y = torch.randn(4, 2, 2, 2), torch.tensor([0, 1, 2, 0])
    out, losses = KD(child, parent, temperature=4.0, kd_weight=0.9, task_weight=0.1).forward_train(x, y)
    assert losses["task"].item() == pytest.approx(0.1 * F.cross_entropy(out, y).item())
    assert losses["kd"].item() == pytest.approx(0.9 * kd_loss(out, parent(x), 4.0).item())


def test_logit_standardization_by_hand_and_in_kd():
    z = torch.tensor([[1.0, 2.0, 3.0]])
    assert standardize(z)[0].tolist() == pytest.approx([-1.0, 0.0, 1.0], abs=1e-6)  # mean 2, unbiased std 1
    child, parent = nn.Linear(4, 3), nn.Linear(4, 3)
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    method = build_method("kd", child, parent, x, logit_standardize=True, temperature=2.0)
    _, losses = method.forward_train(x, y)
    with torch.no_grad():
        s, t = standardize(child(x)), standardize(parent(x))
        ce = F.cross_entropy(child(x), y).item()
    by_hand = (F.kl_div(F.log_softmax(s / 2, 1), F.softmax(t / 2, 1), reduction="batchmean") * 4).item()
    # the authors' recipe for what was left unset: KD weight 9, CE weight 0.1
    assert losses["kd"].item() == pytest.approx(9 * by_hand, rel=1e-5)
    assert losses["task"].item() == pytest.approx(0.1 * ce, rel=1e-5)


def test_logit_standardization_switch_takes_the_authors_recipe_for_unset_options_only(caplog):
    child, parent, x = nn.Linear(4, 3), nn.Linear(4, 3), torch.randn(5, 4)
    plain = build_method("kd", child, parent, x)
    assert (plain.temperature, plain.kd_weight, plain.task_weight) == (4.0, 1.0, 1.0)
    with caplog.at_level("INFO", logger="hkt"):
        kd = build_method("kd", child, parent, x, logit_standardize=True, kd_weight=3.0)
    assert (kd.temperature, kd.kd_weight, kd.task_weight) == (2.0, 3.0, 0.1)
    assert "kd with logit standardisation: temperature=2 (recipe), kd_weight=3, task_weight=0.1 (recipe)" in caplog.text
    dkd = build_method("dkd", child, parent, x, logit_standardize=True)
    assert (dkd.alpha, dkd.beta, dkd.temperature, dkd.task_weight) == (9.0, 18.0, 2.0, 1.0)  # alpha, beta x 9 at T 2
    assert (build_method("dkd", child, parent, x).alpha, build_method("dkd", child, parent, x).beta) == (1.0, 2.0)
    torch.manual_seed(0)
    child, parent = build_model("resnet8", width=4), build_model("resnet8", width=8)
    hkt = build_method("hkt", child, parent, torch.randn(2, 3, 32, 32), genes=["avgpool"], logit_standardize=True)
    assert (hkt.kd_weight, hkt.temperature) == (9.0, 2.0)
    assert build_method("hkt", child, parent, torch.randn(2, 3, 32, 32), genes=["avgpool"]).kd_weight == 0.0
