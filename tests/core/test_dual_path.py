"""Stacked paths: per-path BatchNorm is armed from the first child gene only."""

import torch
from torch import nn

from hkt.core import Inheritance, parse_genes


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


def test_per_path_batchnorm_is_armed_from_the_first_child_gene_only():
    torch.manual_seed(0)
    parent, child = Siamese(8).eval(), Siamese(4)
    pair = torch.randn(6, 2, 3, 8, 8)
    inheritance = Inheritance(parent, child, parse_genes(["block"]), pair[:2], reverse=False)
    plain = Siamese(4)
    plain.load_state_dict(child.state_dict())
    child.train(), plain.train()
    result = inheritance(parent, child, pair)
    expected = plain(pair)
    assert torch.allclose(result.child, expected, atol=1e-6), (result.child - expected).abs().max()
    for a, b in zip(child.modules(), plain.modules()):
        if isinstance(a, nn.BatchNorm2d):
            assert torch.allclose(a.running_mean, b.running_mean, atol=1e-7) and torch.allclose(a.running_var, b.running_var, atol=1e-6)
