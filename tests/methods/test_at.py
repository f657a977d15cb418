"""``at``: attention transfer by hand, beta 1000, maps of different sizes pooled."""

from collections import OrderedDict

import pytest
import torch
from torch import nn

from hkt.methods import AT


class Flip(nn.Module):
    def forward(self, x):
        return x.flip(-1)


def test_at_uses_beta_1000_on_the_sum_of_mean_squared_attention_differences():
    child = nn.Sequential(OrderedDict(feat=nn.Identity(), head=nn.Sequential(nn.Flatten(), nn.Linear(2, 3))))
    parent = nn.Sequential(OrderedDict(feat=Flip(), head=nn.Sequential(nn.Flatten(), nn.Linear(2, 3))))
    y = torch.tensor([1])
    # child map [1, 2] -> attention [1, 4] / sqrt(17); parent sees it flipped, [4, 1] / sqrt(17)
    x = torch.tensor([[[[1.0, 2.0]]]])
    method = AT(child, parent, genes=["feat"])
    assert method.beta == 1000.0
    _, losses = method.forward_train(x, y)
    assert losses["at"].item() == pytest.approx(1000 * 9 / 17, rel=1e-6)


def test_at_average_pools_the_larger_map_to_the_smaller():
    from hkt.methods.at import at_loss

    child = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])  # (1, 1, 2, 2): attention map (1, 0, 0, 0) after normalising
    parent = torch.zeros(1, 1, 4, 4)
    parent[0, 0, 2:, 2:] = 2.0  # pooled to 2x2: only the bottom-right cell, 2 -> squared 4 -> normalised (0, 0, 0, 1)
    assert at_loss(child, parent).item() == pytest.approx((1 + 1) / 4)
    assert at_loss(parent, child).item() == pytest.approx((1 + 1) / 4)  # the child's map may be the larger one
