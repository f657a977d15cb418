"""Stronger rivals and the follow-up inheritance, each against numbers computed by hand on a tiny case: DKD, DIST,
ReviewKD, logit standardisation, the learnable (LePoKet) Genetic Attention, gate schedules; dense tasks; refusals."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hkt.config import ConfigError, load_config
from hkt.core.genetic_attention import LePoKetAttention, build_attention
from hkt.core.transfer import GeneShapeError
from hkt.methods import build_method
from hkt.methods.base import standardize, warmup_factor
from hkt.methods.dist import dist_loss
from hkt.methods.dkd import dkd_loss
from hkt.methods.reviewkd import hcl_loss
from hkt.models import build_model
from hkt.tasks import Flow, Segmentation


def kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q))


def test_dkd_by_hand():
    s, t, y = torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([[2.0, 1.0, 0.0]]), torch.tensor([0])
    ps, pt = torch.softmax(s, 1)[0].tolist(), torch.softmax(t, 1)[0].tolist()
    tckd = kl([pt[0], 1 - pt[0]], [ps[0], 1 - ps[0]])
    nckd = kl([pt[1] / (1 - pt[0]), pt[2] / (1 - pt[0])], [ps[1] / (1 - ps[0]), ps[2] / (1 - ps[0])])
    assert dkd_loss(s, t, y, alpha=1.0, beta=2.0, temperature=1.0).item() == pytest.approx(tckd + 2 * nckd, rel=1e-5)
    # T = 2: each term on the softened distributions, times T^2
    ps, pt = torch.softmax(s / 2, 1)[0].tolist(), torch.softmax(t / 2, 1)[0].tolist()
    by_hand = 4 * (0.5 * kl([pt[0], 1 - pt[0]], [ps[0], 1 - ps[0]]) + kl([pt[1] / (1 - pt[0]), pt[2] / (1 - pt[0])], [ps[1] / (1 - ps[0]), ps[2] / (1 - ps[0])]))
    assert dkd_loss(s, t, y, alpha=0.5, beta=1.0, temperature=2.0).item() == pytest.approx(by_hand, rel=1e-5)
    assert [warmup_factor(20, "epochs", 0, e) for e in (0, 9, 19, 30)] == [0.05, 0.5, 1.0, 1.0]
    assert warmup_factor(100, "steps", 49, 0) == 0.5 and warmup_factor(0, "epochs", 0, 0) == 1.0


def test_dist_by_hand():
    s, t = torch.tensor([[0.0, 1.0, 2.0], [0.0, 0.0, 1.0]]), torch.tensor([[0.0, 2.0, 1.0], [1.0, 0.0, 0.0]])
    ys, yt = torch.softmax(s, 1), torch.softmax(t, 1)

    def pearson(a, b):
        a, b = a - a.mean(), b - b.mean()
        return float((a * b).sum() / (a.norm() * b.norm()))

    inter = 1 - (pearson(ys[0], yt[0]) + pearson(ys[1], yt[1])) / 2
    intra = 1 - sum(pearson(ys[:, k], yt[:, k]) for k in range(3)) / 3
    assert dist_loss(s, t, beta=1.0, gamma=2.0, temperature=1.0).item() == pytest.approx(inter + 2 * intra, rel=1e-5)


def test_logit_standardization_by_hand_and_in_kd():
    z = torch.tensor([[1.0, 2.0, 3.0]])
    assert standardize(z)[0].tolist() == pytest.approx([-1.0, 0.0, 1.0], abs=1e-6)  # mean 2, unbiased std 1
    child, parent = nn.Linear(4, 3), nn.Linear(4, 3)
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    method = build_method("kd", child, parent, x, logit_standardize=True, temperature=2.0)
    _, losses = method.forward_train(x, y)
    with torch.no_grad():
        s, t = standardize(child(x)), standardize(parent(x))
        ce = F.cross_entropy(child(x), y).item()
    by_hand = (F.kl_div(F.log_softmax(s / 2, 1), F.softmax(t / 2, 1), reduction="batchmean") * 4).item()
    # the authors' recipe for what was left unset: KD weight 9, CE weight 0.1
    assert losses["kd"].item() == pytest.approx(9 * by_hand, rel=1e-5)
    assert losses["task"].item() == pytest.approx(0.1 * ce, rel=1e-5)


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


def test_lepoket_attention_by_hand_for_vectors_and_maps():
    ga = LePoKetAttention(2, rank=2, lam=0.5)
    with torch.no_grad():
        for w in (ga.w_q, ga.w_k, ga.w_v):
            w.weight.copy_(torch.eye(2))
        for layer in (ga.mlp[0], ga.mlp[2]):
            layer.weight.zero_()
            layer.bias.zero_()  # MLP gate = sigmoid(0) = 0.5
    q, v = torch.tensor([[1.0, 0.0]]), torch.tensor([[2.0, 1.0]])
    a = 0.5 * (1 / (1 + math.exp(-2.0 / math.sqrt(2))) + 0.5)  # <Q, K> = 2, d = 2
    expected = q + 0.5 * a * (v - q)
    assert torch.allclose(ga(q, v), expected, atol=1e-6) and ga.gate.item() == pytest.approx(0.5 * a, rel=1e-6)
    assert isinstance(ga.lam, nn.Parameter)
    maps = build_attention("lepoket", 4, 4, 0.6)
    out = maps(torch.randn(2, 4, 5, 5), torch.randn(2, 4, 5, 5))
    assert out.shape == (2, 4, 5, 5) and maps.gate.shape == (2, 1, 5, 5)


def test_hkt_with_lepoket_learns_lambda_and_logs_its_gate():
    torch.manual_seed(0)
    parent, child = build_model("resnet14", width=16).eval(), build_model("resnet8", width=8)
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    method = build_method("hkt", child, parent, x[:2], genes=["layer2", "avgpool"], attention="lepoket").train()
    _, losses = method.forward_train(x, y)
    sum(losses.values()).backward()
    assert method.inheritance.attentions[1].lam.grad is not None
    assert set(method.log_values()) == {"gate/layer2", "gate/avgpool"}
    with pytest.raises(GeneShapeError, match="cannot align"):
        build_method("hkt", child, parent, x[:2], genes=["layer3:avgpool"], attention="lepoket")


def test_gate_schedule_moves_the_inheritance_rate_from_lam_to_lam_final():
    torch.manual_seed(0)
    parent, child = build_model("resnet14", width=16).eval(), build_model("resnet8", width=16)
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    method = build_method("hkt", child, parent, x[:2], genes=["avgpool"], attention="static", parent_weight=0.8,
                          lam=0.8, lam_schedule="linear", lam_final=0.0)
    for step, expected in ((0, 0.8), (5, 0.4), (10, 0.0)):
        method.on_train_step(step, 11, 0)
        method.forward_train(x, y)
        assert method.log_values()["gate/avgpool"].item() == pytest.approx(expected, abs=1e-6)
    method.on_train_step(10, 11, 0)
    r = method.inheritance(parent, child, x)
    assert torch.allclose(r.inherited, r.child, atol=1e-6)  # weaned off: the mix is the child's own feature
    cos = build_method("hkt", child, parent, x[:2], genes=["avgpool"], lam=0.6, lam_schedule="cosine", lam_final=0.2)
    cos.on_train_step(5, 11, 0)
    assert cos.log_values()["lam/scale"].item() == pytest.approx((0.6 - 0.4 * 0.5) / 0.6)
    with pytest.raises(ValueError, match="set method.lam_final"):
        build_method("hkt", child, parent, x[:2], genes=["avgpool"], lam_schedule="linear")


def test_dkd_dist_and_logit_standardization_apply_per_pixel_for_segmentation():
    torch.manual_seed(0)
    parent, child = build_model("unet3", 3, 1, 8).eval(), build_model("unet3", 3, 1, 4)
    x, y = torch.randn(2, 1, 16, 16), torch.randint(0, 3, (2, 16, 16))
    child.eval()  # as the methods below run (eval mode: running BatchNorm statistics)
    with torch.no_grad():
        s, t = child(x), parent(x)
    rows = lambda z: z.movedim(1, -1).reshape(-1, 3)  # noqa: E731
    for name, options, term, by_hand in [
        ("dkd", {"warmup": 0}, "dkd", lambda: dkd_loss(rows(s), rows(t), y.reshape(-1), 1.0, 2.0, 4.0)),
        ("dist", {}, "dist", lambda: 2 * dist_loss(rows(s), rows(t))),  # dist_weight 2
        ("kd", {"logit_standardize": True, "temperature": 4.0, "kd_weight": 1.0}, "kd", lambda: F.kl_div(F.log_softmax(standardize(s) / 4, 1), F.softmax(standardize(t) / 4, 1), reduction="none").sum(1).mean() * 16),
    ]:
        method = build_method(name, child, parent, x, Segmentation(1.0), **options).eval()
        _, losses = method.forward_train(x, y)
        assert losses[term].item() == pytest.approx(by_hand().item(), rel=1e-4), name


def test_logit_methods_refuse_flow_naming_what_applies():
    parent, child = build_model("torchvision:raft_small", iterations=2), build_model("torchvision:raft_small", iterations=2)
    x = torch.randn(1, 2, 3, 32, 32)
    for name, options in (("dkd", {}), ("dist", {}), ("kd", {"logit_standardize": True})):
        with pytest.raises(ValueError, match=r"regresses values; methods that apply here: ce, kd, fitnet, at, reviewkd, hkt"):
            build_method(name, child, parent, x, Flow(), **options)


def test_bad_rival_options_fail_before_training():
    with pytest.raises(ConfigError, match=r"'method\.gama'.*gamma"):
        load_config(None, ["parent.arch=resnet8", "method={name: dist, gama: 2}"])
    with pytest.raises(ConfigError, match=r"'method\.alpah'.*alpha"):
        load_config(None, ["parent.arch=resnet8", "method={name: dkd, alpah: 2}"])


def test_logit_standardization_switch_takes_the_authors_recipe_for_unset_options_only(caplog):
    child, parent, x = nn.Linear(4, 3), nn.Linear(4, 3), torch.randn(5, 4)
    plain = build_method("kd", child, parent, x)
    assert (plain.temperature, plain.kd_weight, plain.task_weight) == (4.0, 1.0, 1.0)
    with caplog.at_level("INFO", logger="hkt"):
        kd = build_method("kd", child, parent, x, logit_standardize=True, kd_weight=3.0)
    assert (kd.temperature, kd.kd_weight, kd.task_weight) == (2.0, 3.0, 0.1)
    assert "kd with logit standardisation: temperature=2 (recipe), kd_weight=3, task_weight=0.1 (recipe)" in caplog.text
    dkd = build_method("dkd", child, parent, x, logit_standardize=True)
    assert (dkd.alpha, dkd.beta, dkd.temperature, dkd.task_weight) == (9.0, 18.0, 2.0, 1.0)  # alpha, beta x 9 at T 2
    assert (build_method("dkd", child, parent, x).alpha, build_method("dkd", child, parent, x).beta) == (1.0, 2.0)
    torch.manual_seed(0)
    child, parent = build_model("resnet8", width=4), build_model("resnet8", width=8)
    hkt = build_method("hkt", child, parent, torch.randn(2, 3, 32, 32), genes=["avgpool"], logit_standardize=True)
    assert (hkt.kd_weight, hkt.temperature) == (9.0, 2.0)
    assert build_method("hkt", child, parent, torch.randn(2, 3, 32, 32), genes=["avgpool"]).kd_weight == 0.0


def test_dist_weight_doubles_the_relation_terms_by_default():
    child, parent, x, y = nn.Linear(4, 3), nn.Linear(4, 3), torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    _, losses = build_method("dist", child, parent, x).forward_train(x, y)
    with torch.no_grad():
        by_hand = dist_loss(child(x), parent(x), 1.0, 1.0, 4.0).item()
    assert losses["dist"].item() == pytest.approx(2 * by_hand, rel=1e-6)


def test_at_average_pools_the_larger_map_to_the_smaller():
    from hkt.methods.at import at_loss

    child = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])  # (1, 1, 2, 2): attention map (1, 0, 0, 0) after normalising
    parent = torch.zeros(1, 1, 4, 4)
    parent[0, 0, 2:, 2:] = 2.0  # pooled to 2x2: only the bottom-right cell, 2 -> squared 4 -> normalised (0, 0, 0, 1)
    assert at_loss(child, parent).item() == pytest.approx((1 + 1) / 4)
    assert at_loss(parent, child).item() == pytest.approx((1 + 1) / 4)  # the child's map may be the larger one


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
    with pytest.raises(GeneShapeError, match="pre-activation.*HKT mixes"):
        build_method("hkt", child, parent, torch.randn(2, 3, 32, 32), genes="layer3@preact:layer3")


def test_lepoket_layers_start_kaiming_normal_as_the_authors_code():
    c = 64
    weights = {name: [] for name in ("w_q", "w_k", "w_v", "mlp0", "mlp2")}
    for seed in range(20):
        torch.manual_seed(seed)
        ga = LePoKetAttention(c, rank=2)
        for name, layer in (("w_q", ga.w_q), ("w_k", ga.w_k), ("w_v", ga.w_v), ("mlp0", ga.mlp[0]), ("mlp2", ga.mlp[2])):
            weights[name].append(layer.weight.detach().flatten())
    for name, w in weights.items():  # kaiming_normal_ (fan-in, gain sqrt 2): std sqrt(2 / 64) = 0.177
        assert torch.cat(w).std().item() == pytest.approx((2 / c) ** 0.5, rel=0.08), name
