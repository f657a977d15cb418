"""Model zoo: ``build_model(arch, ...)`` for our CIFAR ResNets and any torchvision classification model."""

from __future__ import annotations

from torch import nn

from hkt.models.cifar_resnet import DEPTHS, CifarResNet, cifar_resnet
from hkt.models.weights import REGISTRY, CheckpointMismatchError, load_into, load_weights, read_state_dict, resolve


def build_model(
    arch: str, num_classes: int = 10, in_channels: int = 3, width: int = 16, weights: str | None = None
) -> nn.Module:
    """``resnet20`` … ``resnet1202`` (CIFAR ResNets) or ``torchvision:<name>`` (e.g. ``torchvision:resnet18``).

    ``weights``: a registry name (``resnet56-cifar10``), a file path, or ``None`` for random init.
    """
    if arch.startswith("resnet") and arch[6:].isdigit():
        model: nn.Module = cifar_resnet(int(arch[6:]), num_classes, width, in_channels)
    elif arch.startswith("torchvision:"):
        import torchvision

        model = torchvision.models.get_model(arch.split(":", 1)[1], num_classes=num_classes)
    else:
        raise ValueError(
            f"unknown architecture {arch!r}: use resnet<6n+2> ({', '.join(f'resnet{d}' for d in DEPTHS)}) "
            "or torchvision:<model name>"
        )
    if weights:
        load_weights(model, weights)
    return model


__all__ = [
    "DEPTHS", "REGISTRY", "CheckpointMismatchError", "CifarResNet", "build_model", "cifar_resnet", "load_into",
    "load_weights", "read_state_dict", "resolve",
]
