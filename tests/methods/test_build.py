"""Building methods: logit methods per pixel for segmentation, refused for flow, bad options before training."""

import pytest
import torch
import torch.nn.functional as F

from hkt.config import ConfigError, load_config
from hkt.losses import standardize
from hkt.methods import build_method
from hkt.methods.dist import dist_loss
from hkt.methods.dkd import dkd_loss
from hkt.models import build_model
from hkt.tasks import Flow, Segmentation


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
        (
            "kd",
            {"logit_standardize": True, "temperature": 4.0, "kd_weight": 1.0},
            "kd",
            lambda: F.kl_div(F.log_softmax(standardize(s) / 4, 1), F.softmax(standardize(t) / 4, 1), reduction="none").sum(1).mean() * 16,
        ),
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
