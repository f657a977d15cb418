"""The stacked engine (one parent pass, native and inherited paths stacked along the batch) is a speed-up of the
separate-pass reference: both give the same losses and gradients, for CIFAR ResNets (pooled and stage genes), a U-Net
whose skips cross the genes and a network whose stem runs on 2B rows; and the comparison fails when the speed-up
is broken (BatchNorm no longer split per path)."""

import logging
from contextlib import nullcontext

import pytest
import torch
from torch import nn

from hkt.core import engines
from hkt.core.gene import parse_genes
from hkt.core.inheritance import Inheritance
from hkt.core.kinds import GeneShapeError
from hkt.methods import HKT
from hkt.models import build_model


def resnets(genes, **options):
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    return HKT(build_model("resnet8", width=8), build_model("resnet14", width=16), genes=genes, example_input=x[:2], **options), x, y


def unet():
    x, y = torch.randn(4, 1, 32, 32), torch.randint(0, 3, (4, 32, 32))
    child, parent = build_model("unet4", 3, 1, width=4), build_model("unet4", 3, 1, width=8)
    return HKT(child, parent, genes=["encoder.2", "bottleneck", "decoder.1"], example_input=x[:2]), x, y


def siamese(Siamese):
    pair, y = torch.randn(6, 2, 3, 8, 8), torch.randint(0, 5, (6,))
    return HKT(Siamese(4), Siamese(8).eval(), genes=["block"], example_input=pair[:2], kd_weight=1.0), pair, y


CASES = {
    "resnet pooled gene + kd": lambda: resnets(["avgpool"], kd_weight=1.0),
    "resnet stage genes": lambda: resnets(["layer1", "layer2", "layer3"]),
    "u-net, skips across genes": unet,
    "2B-row stem before the gene": "siamese",
}


def both_engines(method, x, y):
    out = []
    for stacked in (True, False):
        torch.manual_seed(0)
        method.zero_grad()
        method.inheritance.stacked = stacked
        _, losses = method.forward_train(x, y)
        sum(losses.values()).backward()
        out.append(({k: v.detach() for k, v in losses.items()}, [p.grad.clone() for p in method.learnable_parameters()]))
    return out


def same(a, b):
    (la, ga), (lb, gb) = a, b
    return (
        la.keys() == lb.keys()
        and all(torch.allclose(la[k], lb[k], atol=1e-5, rtol=1e-5) for k in la)
        and all(torch.allclose(p, q, atol=1e-5, rtol=1e-4) for p, q in zip(ga, gb))
    )


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_stacked_engine_equals_the_separate_reference(case, siamese_net):
    torch.manual_seed(0)
    method, x, y = siamese(siamese_net) if CASES[case] == "siamese" else CASES[case]()
    assert method.inheritance.stacked, "the dry run chose the stacked engine"
    stacked, separate = both_engines(method.train(), x, y)
    assert {"child", "inherit", "parent"} <= set(stacked[0])
    assert same(stacked, separate)


def test_the_comparison_fails_when_the_speed_up_is_broken(monkeypatch):
    torch.manual_seed(0)
    method, x, y = CASES["resnet stage genes"]()
    monkeypatch.setattr(engines, "per_path_batchnorm", lambda *a, **k: nullcontext())  # BN pools both paths
    stacked, separate = both_engines(method.train(), x, y)
    assert not same(stacked, separate)


class EchoStem(nn.Module):
    """A child whose output also holds its stem feature twice (``2B`` rows of its own, from before the gene): the
    stacked engine's row-count split would cut it in half."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.block, self.head = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.Linear(4, 10)

    def forward(self, x):
        s = self.stem(x)
        return self.head(self.block(s).mean((2, 3))), torch.cat([s, s])


def test_a_model_that_defeats_the_row_count_split_runs_the_reference(caplog):
    torch.manual_seed(0)
    parent, child, x = build_model("resnet8", width=8).eval(), EchoStem(), torch.randn(4, 3, 32, 32)
    with caplog.at_level(logging.WARNING, logger="hkt"):
        inh = Inheritance(parent, child, parse_genes(["layer1:block"]), x[:2])
    assert not inh.stacked
    assert (
        "does not reproduce the separate-pass reference" in caplog.text
        and "child[1]: shape (2, 4, 32, 32), the reference has (4, 4, 32, 32)" in caplog.text
    )
    out = inh(parent, child, x)
    assert out.child[1].shape == (8, 4, 32, 32)  # the model's own 2B rows, untouched
    inh.stacked = True  # what the row-count split alone would have returned
    assert inh(parent, child, x).child[1].shape == (4, 4, 32, 32)


def test_the_stacked_engine_is_kept_where_it_reproduces_the_reference(caplog):
    torch.manual_seed(0)
    with caplog.at_level(logging.WARNING, logger="hkt"):
        method, _, _ = CASES["u-net, skips across genes"]()
    assert method.inheritance.stacked and "does not reproduce" not in caplog.text


EDGE_CHILDREN = {  # timm children users deploy, each with the stage gene matching the parent's layer3 (stride 16)
    "timm:mobilenetv3_small_050": ("blocks.3", "conv_stem"),
    "timm:mobilenetv3_large_100": ("blocks.4", "conv_stem"),
    "timm:efficientnet_b0": ("blocks.4", "conv_stem"),
    "timm:resnet18": ("layer3", "conv1"),
}


@pytest.fixture
def float64():
    torch.set_default_dtype(torch.float64)  # adapters built inside the method follow it
    yield
    torch.set_default_dtype(torch.float32)


@pytest.mark.parametrize("arch", sorted(EDGE_CHILDREN))
def test_mobilenet_and_efficientnet_children_keep_the_one_pass_engine(arch, caplog, float64):
    """timm's BatchNormAct2d (BatchNorm with its activation fused in) runs the inherited half through its own forward,
    so MobileNet and EfficientNet children keep the stacked engine: the parent's stem and the child's stem run once
    per step, and losses and gradients equal the separate-pass reference (float64: round-off alone is 1e-13)."""
    pytest.importorskip("timm")
    gene, stem = EDGE_CHILDREN[arch]
    torch.manual_seed(0)
    parent, child = build_model("timm:resnet18", 5).eval(), build_model(arch, 5)
    x, y = torch.randn(4, 3, 64, 64), torch.randint(0, 5, (4,))
    with caplog.at_level(logging.WARNING, logger="hkt"):
        method = HKT(child, parent, genes=[{"parent": "layer3", "child": gene}], example_input=x[:2])
    assert method.inheritance.stacked and "does not reproduce" not in caplog.text
    calls = {"parent": 0, "child": 0}
    parent.conv1.register_forward_hook(lambda *_: calls.__setitem__("parent", calls["parent"] + 1))
    child.get_submodule(stem).register_forward_hook(lambda *_: calls.__setitem__("child", calls["child"] + 1))
    method.train().forward_train(x, y)
    assert calls == {"parent": 1, "child": 1}
    (ls, gs), (lr, gr) = both_engines(method, x, y)
    assert all(torch.allclose(ls[k], lr[k], atol=1e-10) for k in ls)
    assert all(torch.allclose(p, q, atol=1e-10) for p, q in zip(gs, gr))


def test_a_parent_that_cuts_the_gradient_after_the_gene_fails_at_construction_naming_the_module():
    """A parent whose last stage runs under ``torch.set_grad_enabled(False)`` would give the parent term no gradient,
    silently, in both engines (the reference included): the construction names the module instead."""
    parent = build_model("resnet14", width=16)
    stage = parent.layer3

    class NoGrad(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = stage

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            with torch.set_grad_enabled(False):
                return self.inner(x)

    parent.layer3 = NoGrad()
    x = torch.randn(2, 3, 32, 32)
    with pytest.raises(GeneShapeError, match=r"parent term has no gradient: module 'layer3\.inner\.0"):
        HKT(build_model("resnet8", width=8), parent.eval(), genes=["layer2"], example_input=x)
    HKT(build_model("resnet8", width=8), parent.eval(), genes=["layer2"], example_input=x, w_parent=0.0)  # no parent term: fine
