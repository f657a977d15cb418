"""``dist`` against DIST computed by hand, with the authors' overall weight."""

import pytest
import torch
from torch import nn

from hkt.methods import build_method
from hkt.methods.dist import dist_loss


def test_dist_by_hand():
    s, t = torch.tensor([[0.0, 1.0, 2.0], [0.0, 0.0, 1.0]]), torch.tensor([[0.0, 2.0, 1.0], [1.0, 0.0, 0.0]])
    ys, yt = torch.softmax(s, 1), torch.softmax(t, 1)

    def pearson(a, b):
        a, b = a - a.mean(), b - b.mean()
        return float((a * b).sum() / (a.norm() * b.norm()))

    inter = 1 - (pearson(ys[0], yt[0]) + pearson(ys[1], yt[1])) / 2
    intra = 1 - sum(pearson(ys[:, k], yt[:, k]) for k in range(3)) / 3
    assert dist_loss(s, t, beta=1.0, gamma=2.0, temperature=1.0).item() == pytest.approx(inter + 2 * intra, rel=1e-5)


def test_dist_weight_doubles_the_relation_terms_by_default():
    child, parent, x, y = nn.Linear(4, 3), nn.Linear(4, 3), torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    _, losses = build_method("dist", child, parent, x).forward_train(x, y)
    with torch.no_grad():
        by_hand = dist_loss(child(x), parent(x), 1.0, 1.0, 4.0).item()
    assert losses["dist"].item() == pytest.approx(2 * by_hand, rel=1e-6)
