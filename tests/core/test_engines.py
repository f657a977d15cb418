"""The one-pass engine (one parent pass; the child's native and inherited paths as one forward, a vmap dimension) is
a speed-up of the separate-pass reference: both give the same losses, gradients and BatchNorm statistics, for CIFAR
ResNets (pooled and stage genes), a U-Net whose skips cross the genes, a network whose stem runs on 2B rows and the
timm children users deploy; the comparison fails when the speed-up is broken (BatchNorm no longer normalising each
path on its own), and the rehearsal then falls back with the reason."""

import contextlib
import logging

import pytest
import torch
from torch import nn

from hkt.core import two_paths
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
    # with KD the parent carries two paths too, and the child's two paths run nested inside the parent's
    "resnet stage genes + kd": lambda: resnets(["layer1", "layer2", "layer3"], kd_weight=1.0),
    "u-net, skips across genes": unet,
    "2B-row stem before the gene": "siamese",
}


def both_engines(method, x, y):
    """Losses, gradients and the child's buffers after one training step of each engine, from the same state."""
    out, start = [], {n: b.clone() for n, b in method.child.named_buffers()}
    for one_pass in (True, False):
        torch.manual_seed(0)
        method.zero_grad()
        for n, b in method.child.named_buffers():
            b.data.copy_(start[n])
        method.inheritance.one_pass = one_pass
        _, losses = method.forward_train(x, y)
        sum(losses.values()).backward()
        grads = [p.grad.clone() for p in method.learnable_parameters()]
        out.append(({k: v.detach() for k, v in losses.items()}, grads, [b.clone() for b in method.child.buffers()]))
    return out


def same(a, b, atol=1e-5):
    (la, ga, ba), (lb, gb, bb) = a, b
    return (
        la.keys() == lb.keys()
        and all(torch.allclose(la[k], lb[k], atol=atol, rtol=1e-5) for k in la)
        and all(torch.allclose(p, q, atol=atol, rtol=1e-4) for p, q in zip(ga, gb))
        and all(torch.allclose(p.double(), q.double(), atol=atol, rtol=1e-5) for p, q in zip(ba, bb))
    )


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_one_pass_engine_equals_the_separate_reference(case, siamese_net):
    torch.manual_seed(0)
    method, x, y = siamese(siamese_net) if CASES[case] == "siamese" else CASES[case]()
    assert method.inheritance.one_pass, "the dry run and the rehearsal chose the one-pass engine"
    one_pass, separate = both_engines(method.train(), x, y)
    assert {"child", "inherit", "parent"} <= set(one_pass[0])
    assert same(one_pass, separate)


def shared_statistics(monkeypatch):
    """Break the speed-up: BatchNorm layers after the gene no longer normalise each path on its own."""
    monkeypatch.setattr(two_paths, "PathBatchNorm", contextlib.nullcontext)


def test_the_comparison_fails_when_batchnorm_statistics_are_not_kept_per_path(monkeypatch):
    torch.manual_seed(0)
    method, x, y = CASES["resnet stage genes"]()
    shared_statistics(monkeypatch)
    with pytest.raises(RuntimeError, match="running_mean"):  # vmap refuses one update of a shared estimate per path
        both_engines(method.train(), x, y)


def test_without_batchnorm_statistics_per_path_the_rehearsal_falls_back_and_says_why(monkeypatch, caplog):
    torch.manual_seed(0)
    shared_statistics(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="hkt"):
        method, x, y = CASES["resnet stage genes"]()
    assert not method.inheritance.one_pass
    assert "does not reproduce the separate-pass reference" in caplog.text and "running_mean" in caplog.text
    _, losses = method.train().forward_train(x, y)  # the reference runs
    assert all(v.isfinite() for v in losses.values())


def test_a_later_gene_mixes_the_inherited_path_only():
    """At a gene after the first the child's feature carries both paths; its Genetic Attention must see the inherited
    path alone (a plain tensor of the batch's shape), not both paths with the native mix thrown away."""
    torch.manual_seed(0)
    method, x, y = CASES["resnet stage genes"]()
    seen = []
    for a in method.inheritance.attentions:
        a.register_forward_hook(lambda _m, inp, _out: seen.append((torch._C._functorch.is_batchedtensor(inp[0]), inp[0].shape[0])))
    method.train().forward_train(x, y)
    assert seen == [(False, len(x))] * 3  # the first gene's feature does not depend on the path; the later two are sliced


class EchoStem(nn.Module):
    """A child whose output also holds its stem feature twice (``2B`` rows of its own, from before the gene)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.block, self.head = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.Linear(4, 10)

    def forward(self, x):
        s = self.stem(x)
        return self.head(self.block(s).mean((2, 3))), torch.cat([s, s])


def test_a_model_with_rows_of_its_own_keeps_the_one_pass_and_its_rows(caplog):
    torch.manual_seed(0)
    parent, child, x = build_model("resnet8", width=8).eval(), EchoStem(), torch.randn(4, 3, 32, 32)
    with caplog.at_level(logging.WARNING, logger="hkt"):
        inh = Inheritance(parent, child, parse_genes(["layer1:block"]), x[:2])
    assert inh.one_pass and not caplog.text
    out = inh(parent, child, x)
    assert out.child[1].shape == (8, 4, 32, 32) and out.inherited[1].shape == (8, 4, 32, 32)
    assert torch.equal(out.child[0], child(x)[0])


class Decides(nn.Module):
    """A child that takes a Python decision from a value after its gene: one forward cannot carry two paths there."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.block, self.head = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.Linear(4, 10)

    def forward(self, x):
        h = self.block(self.stem(x))
        return self.head((h if h.mean() > 0 else -h).mean((2, 3)))


def test_a_child_that_decides_on_a_value_after_the_gene_runs_the_reference_and_says_why(caplog):
    torch.manual_seed(0)
    parent, child, x = build_model("resnet8", width=8).eval(), Decides(), torch.randn(4, 3, 32, 32)
    with caplog.at_level(logging.WARNING, logger="hkt"):
        inh = Inheritance(parent, child, parse_genes(["layer1:stem"]), x[:2])
    assert not inh.one_pass and "it failed" in caplog.text and "data-dependent control flow" in caplog.text
    assert inh(parent, child, x).inherited.shape == (4, 10)


class BNAct(nn.BatchNorm2d):
    """A BatchNorm subclass with its activation fused in (as timm's BatchNormAct2d)."""

    def forward(self, x):
        return torch.relu(super().forward(x))


class FusedNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.block = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), BNAct(4))
        self.tail = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), BNAct(8))
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        return self.head(self.tail(self.block(self.stem(x))).mean((2, 3)))


def test_a_batchnorm_with_a_fused_activation_keeps_the_one_pass_with_its_statistics_per_path():
    torch.manual_seed(0)
    parent = build_model("resnet8", width=8).eval()
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    method = HKT(FusedNet(), parent, genes=["layer1:block"], example_input=x[:2])
    assert method.inheritance.one_pass
    a, b = both_engines(method.train(), x, y)
    assert same(a, b)
    tracked = method.child.tail[1].num_batches_tracked.item()
    method.forward_train(x, y)
    assert method.child.tail[1].num_batches_tracked.item() == tracked + 1  # the native path's step only


def test_the_one_pass_engine_is_kept_where_it_reproduces_the_reference(caplog):
    torch.manual_seed(0)
    with caplog.at_level(logging.WARNING, logger="hkt"):
        method, _, _ = CASES["u-net, skips across genes"]()
    assert method.inheritance.one_pass and "does not reproduce" not in caplog.text


EDGE_CHILDREN = {  # timm and torchvision children users deploy, each with the stage gene matching the parent's layer3 (stride 16)
    "timm:mobilenetv3_small_050": ("blocks.3", "conv_stem"),
    "timm:mobilenetv3_large_100": ("blocks.4", "conv_stem"),
    "timm:efficientnet_b0": ("blocks.4", "conv_stem"),
    "timm:resnet18": ("layer3", "conv1"),
    "timm:convnext_atto": ("stages.2", "stem.0"),
    "torchvision:mobilenet_v3_small": ("features.8", "features.0"),
}


@pytest.fixture
def float64():
    torch.set_default_dtype(torch.float64)  # adapters built inside the method follow it
    yield
    torch.set_default_dtype(torch.float32)


@pytest.mark.parametrize("arch", sorted(EDGE_CHILDREN))
def test_mobilenet_and_efficientnet_children_keep_the_one_pass_engine(arch, caplog, float64):
    """timm's BatchNormAct2d (BatchNorm with its activation fused in) keeps its statistics per path like any BatchNorm,
    so MobileNet and EfficientNet children keep the one-pass engine: the parent's stem and the child's stem run once
    per step, and losses and gradients equal the separate-pass reference (float64: round-off alone is 1e-13)."""
    pytest.importorskip("timm")
    gene, stem = EDGE_CHILDREN[arch]
    torch.manual_seed(0)
    parent, child = build_model("timm:resnet18", 5).eval(), build_model(arch, 5)
    x, y = torch.randn(4, 3, 64, 64), torch.randint(0, 5, (4,))
    with caplog.at_level(logging.WARNING, logger="hkt"):
        method = HKT(child, parent, genes=[{"parent": "layer3", "child": gene}], example_input=x[:2])
    assert method.inheritance.one_pass and "does not reproduce" not in caplog.text
    calls = {"parent": 0, "child": 0}
    parent.conv1.register_forward_hook(lambda *_: calls.__setitem__("parent", calls["parent"] + 1))
    child.get_submodule(stem).register_forward_hook(lambda *_: calls.__setitem__("child", calls["child"] + 1))
    method.train().forward_train(x, y)
    assert calls == {"parent": 1, "child": 1}
    assert same(*both_engines(method, x, y), atol=1e-10)


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


def test_the_rehearsal_leaves_the_child_as_it_found_it():
    """One training step of each engine at construction: every buffer restored, no gradient left, modes kept."""
    torch.manual_seed(0)
    parent, child = build_model("resnet14", width=16).eval(), build_model("resnet8", width=8).train()
    before = {k: v.clone() for k, v in child.state_dict().items()}
    method = HKT(child, parent, genes=["layer1", "layer2", "layer3"], example_input=torch.randn(2, 3, 32, 32))
    assert method.inheritance.one_pass
    assert all(torch.equal(before[k], v) for k, v in child.state_dict().items())  # weights, statistics, step counts
    assert all(p.grad is None for p in method.parameters())
    assert child.training and all(a.gate is None for a in method.inheritance.attentions)
    assert all(
        torch.equal(m.running_mean, torch.zeros_like(m.running_mean)) for m in method.inheritance.modules() if isinstance(m, nn.BatchNorm2d)
    )


def test_under_mixed_precision_every_step_runs_the_reference_and_says_why(caplog):
    """torch.func.vmap does not apply autocast to ops on a forward that carries two paths (pytorch/pytorch#192617):
    a bf16 step of the one pass would mix dtypes, so under autocast the reference runs."""
    torch.manual_seed(0)
    method, x, y = CASES["resnet stage genes"]()
    assert method.inheritance.one_pass
    with caplog.at_level(logging.INFO, logger="hkt"), torch.autocast("cpu", dtype=torch.bfloat16):
        _, losses = method.train().forward_train(x, y)
    assert all(v.isfinite() for v in losses.values()) and "runs the separate-pass reference engine" in caplog.text
