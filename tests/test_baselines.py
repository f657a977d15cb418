"""Baselines as their authors' code trains them, each checked against numbers computed by hand on a tiny case;
the learned Transfer; per-path BatchNorm armed from the first child gene only."""

import math
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hkt.core import Inheritance, parse_genes
from hkt.core.transfer import build_adapter, hint_regressor
from hkt.methods import AT, KD, FitNet, build_method, kd_loss


class Flip(nn.Module):
    def forward(self, x):
        return x.flip(-1)


def tiny(feat: nn.Module, channels: int = 2, size: int = 2) -> nn.Module:
    """``feat`` (the gene) then a linear head on the flattened map."""
    return nn.Sequential(OrderedDict(feat=feat, head=nn.Sequential(nn.Flatten(), nn.Linear(channels * size * size, 3))))


def test_kd_by_hand():
    student, teacher = torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(3.0), 0.0]])
    by_hand = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)  # KL(p_teacher || p_student), T = 1
    assert kd_loss(student, teacher, 1.0).item() == pytest.approx(by_hand, rel=1e-6)
    p = torch.softmax(teacher / 2, 1)[0].tolist()  # T = 2: softened, times T^2
    assert kd_loss(student, teacher, 2.0).item() == pytest.approx(4 * sum(p[i] * math.log(p[i] / 0.5) for i in range(2)), rel=1e-6)
    child, parent = tiny(nn.Identity()), tiny(nn.Identity())
    x, y = torch.randn(4, 2, 2, 2), torch.tensor([0, 1, 2, 0])
    out, losses = KD(child, parent, temperature=4.0, kd_weight=0.9, task_weight=0.1).forward_train(x, y)
    assert losses["task"].item() == pytest.approx(0.1 * F.cross_entropy(out, y).item())
    assert losses["kd"].item() == pytest.approx(0.9 * kd_loss(out, parent(x), 4.0).item())


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


def test_learned_adapter_is_trainable_and_the_identity_at_step_0():
    x = torch.randn(3, 4, 5, 5)
    conv = build_adapter((4, 5, 5), (4, 5, 5), kind="learned")
    assert isinstance(build_adapter((4, 5, 5), (4, 5, 5)), nn.Identity) and sum(p.numel() for p in conv.parameters()) == 4 * 4 + 4
    assert torch.allclose(conv(x), x)
    assert torch.allclose(build_adapter((6,), (6,), kind="learned")(x[:, :, 0, 0].repeat(1, 2)[:, :6]), x[:, :, 0, 0].repeat(1, 2)[:, :6])
    torch.manual_seed(0)
    from hkt.models import build_model

    parent, child = build_model("resnet14", width=16).eval(), build_model("resnet8", width=16).eval()
    x = torch.randn(4, 3, 32, 32)
    y = torch.randint(0, 10, (4,))
    auto = build_method("hkt", child, parent, x[:2], genes=["layer1", "layer2"]).eval()
    learned = build_method("hkt", child, parent, x[:2], genes=["layer1", "layer2"], adapter="learned").eval()
    assert all(isinstance(t, nn.Identity) for t in auto.inheritance.transfers)
    assert all(any(p.requires_grad for p in t.parameters()) for t in learned.inheritance.transfers)
    a, b = auto.forward_train(x, y)[1], learned.forward_train(x, y)[1]
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


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
