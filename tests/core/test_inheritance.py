"""The ETM engine and the HKT method on real CIFAR ResNets (random weights; shapes and maths only)."""

import logging
import math

import pytest
import torch
import torch.nn.functional as F

from hkt.core import GeneShapeError, Inheritance, parse_genes
from hkt.methods import build_method
from hkt.models import build_model


def nets(child_width: int = 16):
    torch.manual_seed(0)
    return build_model("resnet14", width=16).eval(), build_model("resnet8", width=child_width)


def batch(n: int = 6):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)


def count_calls(module: torch.nn.Module) -> list[int]:
    calls = [0]
    module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_reference_objective_by_hand():
    """One pooled gene: the three terms equal CE(head_c(f_c)), CE(head_c(m)), CE(head_p(m))."""
    parent, child = nets()
    x, y = batch()
    child.eval()  # batch statistics aside, compare exactly
    method = build_method("hkt", child, parent, x[:2], genes=["avgpool"])
    method.eval()
    _, losses = method.forward_train(x, y)
    with torch.no_grad():
        f_c, f_p = child.avgpool(child.layer3(child.layer2(child.layer1(F.relu(child.bn1(child.conv1(x))))))), None
        f_p = parent.avgpool(parent.layer3(parent.layer2(parent.layer1(F.relu(parent.bn1(parent.conv1(x)))))))
        s = torch.sigmoid((f_c * f_p).sum(1, keepdim=True) / math.sqrt(f_c.shape[1]))
        m = f_c + 0.6 * (1 - s) * (f_p - f_c)
    assert losses["child"].item() == pytest.approx(F.cross_entropy(child.linear(f_c), y).item(), rel=1e-5)
    assert losses["inherit"].item() == pytest.approx(F.cross_entropy(child.linear(m), y).item(), rel=1e-5)
    assert losses["parent"].item() == pytest.approx(F.cross_entropy(parent.linear(m), y).item(), rel=1e-5)


@pytest.mark.parametrize("genes", [["avgpool"], ["layer1", "layer2", "layer3", "avgpool"]])
def test_parent_and_pre_gene_work_run_once(genes):
    parent, child = nets()
    x, y = batch()
    method = build_method("hkt", child, parent, x[:2], genes=genes, kd_weight=1.0).train()
    parent_stem, child_stem, parent_head = count_calls(parent.conv1), count_calls(child.conv1), count_calls(parent.linear)
    method.forward_train(x, y)
    assert parent_stem[0] == 1 and child_stem[0] == 1
    assert parent_head[0] == 1  # own logits and the mix's logits share one pass (two paths of one forward)


def test_native_path_is_the_plain_child_in_train_mode():
    """Stacked paths must not change the child's own output or its BatchNorm running statistics."""
    parent, child = nets()
    twin = build_model("resnet8")
    twin.load_state_dict(child.state_dict())
    x, _ = batch()
    inh = Inheritance(parent, child, parse_genes(["layer1", "layer2", "layer3"]), x[:2], attention="gated", parent_own=True)
    child.train(), twin.train()
    r = inh(parent, child, x)
    expected = twin(x)
    assert torch.allclose(r.child, expected, atol=1e-5)
    for (k, a), b in zip(child.state_dict().items(), twin.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), k
    assert not torch.allclose(r.inherited, expected)


def test_gradients_reach_child_and_adapters_parent_bit_identical():
    parent, child = nets(child_width=8)  # width mismatch: adapters are real layers
    before = {k: v.clone() for k, v in parent.state_dict().items()}
    x, y = batch()
    method = build_method("hkt", child, parent, x[:2], genes=["layer2", "layer3", "avgpool"], attention="learned")
    method.train()
    assert not parent.training
    opt = torch.optim.SGD(method.learnable_parameters(), lr=0.1, momentum=0.9)
    for step in range(3):
        _, losses = method.forward_train(x, y)
        opt.zero_grad()
        sum(losses.values()).backward()
        if step == 0:  # later a learned gate may saturate, legitimately zeroing its gradient
            named = dict(method.named_parameters())
            assert all(named[f"child.{n}"].grad is not None for n, _ in child.named_parameters())
            adapters = [n for n in named if n.startswith("inheritance.")]
            assert "inheritance.back.weight" in adapters  # 32 -> 64 reverse adapter for the parent term
            assert all(named[n].grad is not None and named[n].grad.abs().sum() > 0 for n in adapters)
        opt.step()
    assert all(p.grad is None for p in parent.parameters())
    for k, v in parent.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert set(method.log_values()) == {"gate/layer2", "gate/layer3", "gate/avgpool"}


def test_parent_term_gradient_flows_through_frozen_parent():
    parent, child = nets()
    x, y = batch()
    method = build_method("hkt", child, parent, x[:2], genes=["avgpool"], w_child=0, w_inherit=0).train()
    _, losses = method.forward_train(x, y)
    assert set(losses) == {"parent"}
    losses["parent"].backward()
    assert child.conv1.weight.grad is not None and child.conv1.weight.grad.abs().sum() > 0


def test_hooks_removed_and_export_is_a_plain_child():
    parent, child = nets()
    x, y = batch()
    method = build_method("hkt", child, parent, x[:2], genes=["layer1", "avgpool"])
    method.forward_train(x, y)
    for net in (parent, child):
        assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())
    exported = method.export_child()
    fresh = build_model("resnet8")
    assert type(exported) is type(fresh)
    assert list(exported.state_dict()) == list(fresh.state_dict())
    assert sum(p.numel() for p in exported.parameters()) == sum(p.numel() for p in fresh.parameters())
    child.eval()
    assert torch.equal(exported(x), child(x))


def test_bad_module_path_lists_closest():
    parent, child = nets()
    x, _ = batch(2)
    with pytest.raises(KeyError, match=r"no module at path 'layer4'.*layer1"):
        build_method("hkt", child, parent, x, genes=["layer4"])
    with pytest.raises(KeyError, match="avgpool"):
        build_method("hkt", child, parent, x, genes=["avgpol"])


def test_unalignable_gene_is_explained():
    parent, child = nets()
    x, _ = batch(2)
    with pytest.raises(GeneShapeError, match=r"cannot align.*\(B, 64, 8, 8\).*\(B, 64\)"):
        build_method("hkt", child, parent, x, genes=["layer3:avgpool"])


def test_all_baselines_train_and_keep_parent_frozen():
    parent, child = nets(child_width=8)
    x, y = batch()
    baselines = {
        "ce": {},
        "kd": {"temperature": 2.0},
        "dkd": {},
        "dist": {},
        "fitnet": {"genes": "layer2"},
        "at": {"genes": ["layer2", "layer3"]},
        "reviewkd": {"genes": ["layer2", "layer3"]},
    }
    for name, opts in baselines.items():
        method = build_method(name, child, None if name == "ce" else parent, x[:2], **opts).train()
        out, losses = method.forward_train(x, y)
        assert out.shape == (6, 10) and all(torch.isfinite(v) for v in losses.values())
        sum(losses.values()).backward()
        assert all(p.grad is None for p in parent.parameters())
        learnable = {id(p) for p in method.learnable_parameters()}
        assert not learnable & {id(p) for p in parent.parameters()}


class SkipNet(torch.nn.Module):
    """A skip connection from before ``mid`` to after it, as in a U-Net."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.mid, self.head = torch.nn.Conv2d(3, 4, 1), torch.nn.Conv2d(4, 4, 1), torch.nn.Conv2d(8, 2, 1)

    def forward(self, x):
        s = self.stem(x)
        return self.head(torch.cat([s, self.mid(s)], dim=1)).mean((2, 3))


def test_a_skip_across_the_first_gene_inside_one_forward_keeps_the_one_pass(caplog):
    """``torch.cat([s, mid(s)])`` inside the forward reads a tensor from before the gene beside one after it: the
    one-pass engine computes ``s`` once for both paths (a row-count split could not see this)."""
    x, _ = batch(2)
    with caplog.at_level(logging.WARNING, logger="hkt"):
        method = build_method("hkt", SkipNet(), SkipNet(), x, genes=["mid"])
    assert method.inheritance.one_pass and not caplog.text
    x, y = batch(4)
    _, losses = method.forward_train(x, y % 2)
    assert set(losses) == {"child", "inherit", "parent"} and all(v.isfinite() for v in losses.values())


def test_a_gene_that_never_runs_is_named_with_the_modules_that_did():
    child = build_model("resnet8", width=8)
    child.unused = torch.nn.Conv2d(3, 3, 1)  # built, never called by forward
    with pytest.raises(GeneShapeError, match=r"\['unused'\] never ran .*modules that ran: conv1, bn1, .*layer3, .*linear"):
        build_method("hkt", child, build_model("resnet14"), torch.randn(2, 3, 32, 32), genes=[{"parent": "layer3", "child": "unused"}])


class Loop(torch.nn.Module):
    """A cell applied ``n`` times per forward."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n, self.stem, self.cell, self.head = n, torch.nn.Conv2d(3, 4, 1), torch.nn.Conv2d(4, 4, 1), torch.nn.Linear(4, 2)

    def forward(self, x):
        h = self.stem(x)
        for _ in range(self.n):
            h = torch.tanh(self.cell(h))
        return self.head(h.mean((2, 3)))


def test_a_gene_called_a_different_number_of_times_in_parent_and_child_is_named_with_both_counts():
    x, _ = batch(2)
    counts = r"gene 'cell': the parent's block 'cell' runs 2 time\(s\) per forward and the child's block 'cell' 3"
    with pytest.raises(GeneShapeError, match=counts):
        build_method("hkt", Loop(3), Loop(2), x, genes=["cell"])
    method = build_method("hkt", Loop(2), Loop(2), x, genes=["cell"])  # equal counts: the reference engine, said why
    assert not method.inheritance.one_pass


def test_a_gene_whose_kinds_cannot_pair_names_both_shapes_and_the_nearest_module_that_would():
    parent, child = nets(child_width=8)
    x, _ = batch(2)
    pair = r"Nearest module that would pair: child 'avgpool' \(B, 32\) or parent 'layer3' \(B, 64, 8, 8\)"
    with pytest.raises(GeneShapeError, match=r"cannot align a vector \(B, 64\) with a map NCHW \(B, 32, 8, 8\).*" + pair):
        build_method("hkt", child, parent, x, genes=[{"parent": "avgpool", "child": "layer3"}])
