"""Networks shared by the engine tests."""

import pytest
from torch import nn


class Siamese(nn.Module):
    """Two views through one stem (2B rows through BatchNorm *before* the gene), fused, then a block (the gene)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.head = nn.Linear(width, 5)

    def forward(self, pair):  # (B, 2, 3, H, W)
        b = pair.shape[0]
        f = self.stem(pair.flatten(0, 1))
        f = f.view(b, 2, *f.shape[1:]).sum(1)
        return self.head(self.block(f).mean((2, 3)))


@pytest.fixture
def siamese_net() -> type[nn.Module]:
    """A network whose stem runs on 2B rows (two views) before its gene, ``block``."""
    return Siamese
