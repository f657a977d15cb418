"""``fitnet``: one-stage hints with a learned regressor, weight 100."""

import math
from collections import OrderedDict

import pytest
import torch
from torch import nn

from hkt.methods import FitNet
from hkt.methods.fitnet import hint_regressor


def tiny(feat: nn.Module, channels: int = 2, size: int = 2) -> nn.Module:
    """``feat`` (the gene) then a linear head on the flattened map."""
    return nn.Sequential(OrderedDict(feat=feat, head=nn.Sequential(nn.Flatten(), nn.Linear(channels * size * size, 3))))


def test_fitnet_always_learns_a_regressor_with_weight_100():
    assert [type(m) for m in hint_regressor((4, 8, 8), (4, 8, 8))] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
    assert hint_regressor((16, 8, 8), (32, 4, 4))[0].stride == (2, 2)
    assert isinstance(hint_regressor((16, 4, 4), (32, 8, 8))[0], nn.ConvTranspose2d)
    assert isinstance(hint_regressor((8,), (8,)), nn.Linear)
    child, parent = tiny(nn.Identity()), tiny(nn.Identity())
    x, y = torch.randn(4, 2, 2, 2), torch.tensor([0, 1, 2, 0])
    method = FitNet(child, parent, "feat", x[:2])
    assert method.hint_weight == 100.0 and sum(p.numel() for p in method.regressor.parameters()) > 0
    with torch.no_grad():
        conv = method.regressor[0]
        nn.init.dirac_(conv.weight)
        conv.weight.mul_(2.0)
        conv.bias.zero_()
    method.eval()  # BatchNorm on its initial running statistics (0, 1): y = relu(2x / sqrt(1 + eps))
    _, losses = method.forward_train(x, y)
    by_hand = 100 * ((torch.relu(2 * x / math.sqrt(1 + 1e-5)) - x) ** 2).mean()
    assert losses["hint"].item() == pytest.approx(by_hand.item(), rel=1e-5)
