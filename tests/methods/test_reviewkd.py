"""``reviewkd``: HCL by hand, ABF never ships, pre-activation parent targets."""

import pytest
import torch
import torch.nn.functional as F

from hkt.core.transfer import GeneShapeError
from hkt.methods import build_method
from hkt.methods.reviewkd import hcl_loss
from hkt.models import build_model


def test_reviewkd_hcl_by_hand_and_its_modules_never_ship():
    fs, ft = torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4)
    ft[0, 0, 0, 0] = 4.0  # full-size MSE 1; 2x2 pools: one cell 1.0 -> MSE 0.25; 1x1: 0.25 -> MSE 0.0625
    by_hand = (1 + 0.5 * 0.25 + 0.25 * 0.0625) / (1 + 0.5 + 0.25)  # level 4 is skipped (4 >= H)
    assert hcl_loss([fs], [ft]).item() == pytest.approx(by_hand, rel=1e-6)
    torch.manual_seed(0)
    parent, child = build_model("resnet14", width=16).eval(), build_model("resnet8", width=8)
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    method = build_method("reviewkd", child, parent, x[:2], genes=["layer1", "layer2", "layer3", "avgpool"], warmup=2)
    assert [a.out[0].out_channels for a in method.abfs] == [64, 64, 32, 16]  # deepest first, to the parent's widths
    method.train().on_train_step(0, 10, 0)
    out, losses = method.forward_train(x, y)
    sum(losses.values()).backward()
    assert out.shape == (4, 10) and losses["review"] > 0 and method.abfs[-1].reduce[0].weight.grad is not None
    assert set(method.export_child().state_dict()) == set(build_model("resnet8", width=8).state_dict())
    with pytest.raises(ValueError, match=r"2 parent gene\(s\).*1 child gene\(s\)"):
        build_method("reviewkd", child, parent, x[:2], genes={"parent": ["layer2", "layer3"], "child": ["layer3"]})


def test_reviewkd_targets_are_the_parents_pre_activation_residual_sums():
    torch.manual_seed(0)
    parent, child = build_model("resnet14").eval(), build_model("resnet8")
    x = torch.randn(2, 3, 32, 32)
    method = build_method("reviewkd", child, parent, x, genes=["layer2", "layer3", "avgpool"])
    assert [g.parent for g in method.genes] == ["layer2@preact", "layer3@preact", "avgpool"]
    assert method.reviewkd_weight == 5.0
    from hkt.core.extract import extracting

    with torch.no_grad(), extracting(parent, method.genes, "parent") as feats:
        parent(x)
        # by hand: the last block of layer3 up to, not through, its final ReLU
        h = F.relu(parent.bn1(parent.conv1(x)))
        h = parent.layer2(parent.layer1(h))
        for block in parent.layer3[:-1]:
            h = block(h)
        b = parent.layer3[-1]
        pre = b.bn2(b.conv2(F.relu(b.bn1(b.conv1(h))))) + b.shortcut(h)
    assert torch.allclose(feats["layer3@preact"], pre, atol=1e-6)
    assert feats["layer3@preact"].min() < 0  # pre-activation: negative values, unlike a post-ReLU output
    post = build_method("reviewkd", child, parent, x, genes=["layer2", "layer3", "avgpool"], preact=False)
    assert [g.parent for g in post.genes] == ["layer2", "layer3", "avgpool"]


def test_preact_on_a_block_without_an_activation_module_fails_naming_it():
    parent, child = build_model("resnet14"), build_model("resnet8")
    with pytest.raises(GeneShapeError, match="parent block 'avgpool@preact'.*no activation module"):
        build_method("fitnet", child, parent, torch.randn(2, 3, 32, 32), genes="avgpool@preact:avgpool")
    with pytest.raises(GeneShapeError, match="pre-activation.*HKT mixes into block outputs"):
        build_method("hkt", child, parent, torch.randn(2, 3, 32, 32), genes="layer3@preact:layer3")
