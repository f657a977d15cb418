"""``dkd`` against DKD computed by hand on a tiny case."""

import math

import pytest
import torch

from hkt.methods.base import warmup_factor
from hkt.methods.dkd import dkd_loss


def kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q))


def test_dkd_by_hand():
    s, t, y = torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([[2.0, 1.0, 0.0]]), torch.tensor([0])
    ps, pt = torch.softmax(s, 1)[0].tolist(), torch.softmax(t, 1)[0].tolist()
    tckd = kl([pt[0], 1 - pt[0]], [ps[0], 1 - ps[0]])
    nckd = kl([pt[1] / (1 - pt[0]), pt[2] / (1 - pt[0])], [ps[1] / (1 - ps[0]), ps[2] / (1 - ps[0])])
    assert dkd_loss(s, t, y, alpha=1.0, beta=2.0, temperature=1.0).item() == pytest.approx(tckd + 2 * nckd, rel=1e-5)
    # T = 2: each term on the softened distributions, times T^2
    ps, pt = torch.softmax(s / 2, 1)[0].tolist(), torch.softmax(t / 2, 1)[0].tolist()
    by_hand = 4 * (
        0.5 * kl([pt[0], 1 - pt[0]], [ps[0], 1 - ps[0]])
        + kl([pt[1] / (1 - pt[0]), pt[2] / (1 - pt[0])], [ps[1] / (1 - ps[0]), ps[2] / (1 - ps[0])])
    )
    assert dkd_loss(s, t, y, alpha=0.5, beta=1.0, temperature=2.0).item() == pytest.approx(by_hand, rel=1e-5)
    assert [warmup_factor(20, "epochs", 0, e) for e in (0, 9, 19, 30)] == [0.05, 0.5, 1.0, 1.0]
    assert warmup_factor(100, "steps", 49, 0) == 0.5 and warmup_factor(0, "epochs", 0, 0) == 1.0
