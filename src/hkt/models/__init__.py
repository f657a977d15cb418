"""Model zoo: ``build_model(arch, ...)`` for our CIFAR ResNets, our U-Net, and torchvision classification and
segmentation models."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from hkt.models.cifar_resnet import DEPTHS, CifarResNet, cifar_resnet
from hkt.models.hub import hf_model, timm_model
from hkt.models.raft import RAFTFlow, raft
from hkt.models.unet import UNet
from hkt.models.weights import REGISTRY, CheckpointMismatchError, load_into, load_weights, read_state_dict, resolve


class SegmentationLogits(nn.Module):
    """A torchvision segmentation model (which returns ``{"out": logits, "aux": ...}``) as a module that returns
    the ``(B, K, H, W)`` logits, so every method and metric sees one tensor. Gene paths start with ``net.``
    (e.g. ``net.backbone.12`` in LRASPP-MobileNetV3)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)["out"]


def _torchvision(name: str, num_classes: int, in_channels: int, weights: str | None = None) -> nn.Module:
    import torchvision

    if name not in torchvision.models.list_models():
        raise ValueError(f"torchvision has no model {name!r}; see torchvision.models.list_models()")
    if name in torchvision.models.list_models(module=torchvision.models.segmentation):
        if in_channels != 3:
            raise ValueError(
                f"torchvision:{name} takes 3 input channels, the data has {in_channels}; for CT use 2.5-D input with "
                "one neighbouring slice on each side (data.context=1) or use arch unet<depth>"
            )
        # weights_backbone=None: no ImageNet download at build time (pass weights=... to load a checkpoint)
        return SegmentationLogits(torchvision.models.get_model(name, num_classes=num_classes, weights=weights, weights_backbone=None))
    return torchvision.models.get_model(name, num_classes=num_classes, weights=weights)


def build_model(
    arch: str,
    num_classes: int = 10,
    in_channels: int = 3,
    width: int = 16,
    weights: str | None = None,
    iterations: int = 12,
    options: dict[str, Any] | None = None,
) -> nn.Module:
    """``resnet20`` … ``resnet1202`` (CIFAR ResNets), ``unet<depth>`` (e.g. ``unet4``; ``width`` = first-level
    channels), ``torchvision:<name>`` (e.g. ``torchvision:resnet18``, ``torchvision:lraspp_mobilenet_v3_large``,
    ``torchvision:raft_small``, with ``iterations`` refinement steps), ``timm:<name>`` (e.g.
    ``timm:vit_tiny_patch16_224`` with ``options={"img_size": 32, "patch_size": 4}``) or ``hf:<class>[:<config>]``
    (e.g. ``hf:ViTForImageClassification`` with ``options={"image_size": 32, "patch_size": 4}``; ``hkt.models.hub``).

    ``weights``: a registry name (``resnet56-cifar10``), a file path, ``torchvision:<weights name>`` for a
    torchvision model's published weights (e.g. ``torchvision:C_T_V2`` for RAFT, ``torchvision:DEFAULT``; downloaded
    and hash-checked by torchvision, so online only), ``timm:pretrained`` for timm's, or ``None`` for random init.
    ``options``: keyword arguments of a ``timm:`` model or config attributes of an ``hf:`` one.
    """
    published = weights.split(":", 1)[1] if weights and weights.startswith(("torchvision:", "timm:")) else None
    if published and not arch.startswith(weights.split(":", 1)[0] + ":"):
        raise ValueError(f"weights {weights!r} are {weights.split(':', 1)[0]}'s; arch {arch!r} is not one of its models")
    if options and not arch.startswith(("timm:", "hf:")):
        raise ValueError(f"options {sorted(options)} are for timm: and hf: models; arch {arch!r} takes none")
    if arch.startswith("timm:"):
        model: nn.Module = timm_model(arch[5:], num_classes, in_channels, weights if published else None, options or {})
    elif arch.startswith("hf:"):
        model = hf_model(arch[3:], num_classes, in_channels, options or {})
    elif arch.startswith("resnet") and arch[6:].isdigit():
        model = cifar_resnet(int(arch[6:]), num_classes, width, in_channels)
    elif arch.startswith("unet") and arch[4:].isdigit():
        model = UNet(in_channels, num_classes, width, int(arch[4:]))
    elif arch.startswith("torchvision:raft_"):
        model = raft(arch.split(":", 1)[1], iterations, published)
    elif arch.startswith("torchvision:"):
        model = _torchvision(arch.split(":", 1)[1], num_classes, in_channels, published)
    else:
        import difflib

        import torchvision

        known = (
            [f"resnet{d}" for d in DEPTHS] + ["unet3", "unet4", "unet5"] + [f"torchvision:{n}" for n in torchvision.models.list_models()]
        )
        close = difflib.get_close_matches(arch, known, n=4, cutoff=0.6)
        raise ValueError(
            f"unknown architecture {arch!r}{' (close names: ' + ', '.join(close) + ')' if close else ''}: use resnet<6n+2> "
            f"({', '.join(f'resnet{d}' for d in DEPTHS)}), unet<depth> (e.g. unet4), torchvision:<model name>, "
            "timm:<model name> or hf:<transformers class>"
        )
    if weights and not published:
        load_weights(model, weights, classifier_paths(model))
    return model


def classifier_paths(model: nn.Module) -> tuple[str, ...]:
    """The module paths of a timm model's classifier (its ``pretrained_cfg``), which a checkpoint for another class
    count may replace; none for other models, which load strictly."""
    classifier = (getattr(model, "pretrained_cfg", None) or {}).get("classifier")
    return (classifier,) if isinstance(classifier, str) else tuple(classifier or ())


__all__ = [
    "DEPTHS",
    "REGISTRY",
    "CheckpointMismatchError",
    "CifarResNet",
    "RAFTFlow",
    "SegmentationLogits",
    "UNet",
    "build_model",
    "cifar_resnet",
    "load_into",
    "load_weights",
    "read_state_dict",
    "resolve",
]
