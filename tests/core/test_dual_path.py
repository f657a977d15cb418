"""Stacked paths: per-path BatchNorm is armed from the first child gene only."""

import torch
from torch import nn

from hkt.core import Inheritance, parse_genes


def test_per_path_batchnorm_is_armed_from_the_first_child_gene_only(siamese_net):
    Siamese = siamese_net
    torch.manual_seed(0)
    parent, child = Siamese(8).eval(), Siamese(4)
    pair = torch.randn(6, 2, 3, 8, 8)
    inheritance = Inheritance(parent, child, parse_genes(["block"]), pair[:2], parent_on_mix=False)
    plain = Siamese(4)
    plain.load_state_dict(child.state_dict())
    child.train(), plain.train()
    result = inheritance(parent, child, pair)
    expected = plain(pair)
    assert torch.allclose(result.child, expected, atol=1e-6), (result.child - expected).abs().max()
    for a, b in zip(child.modules(), plain.modules()):
        if isinstance(a, nn.BatchNorm2d):
            assert torch.allclose(a.running_mean, b.running_mean, atol=1e-7) and torch.allclose(a.running_var, b.running_var, atol=1e-6)
