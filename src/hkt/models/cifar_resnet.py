"""CIFAR ResNets of He et al. 2016 (option-A shortcuts, widths w/2w/4w with w=16), state_dict-compatible
with the published akamaster/pytorch_resnet_cifar10 checkpoints (after stripping ``module.``).

Blocks a gene can name: ``conv1``, ``bn1``, ``layer1``/``layer2``/``layer3`` (and ``layer2.0`` ...),
``avgpool`` (pooled ``(B, 4w)`` feature, the reference gene) and ``linear`` (logits); ``layer3@preact`` reads a
stage before its last ReLU (the residual sum), as ReviewKD's targets.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

DEPTHS = (8, 14, 20, 32, 44, 56, 110, 1202)


class PadShortcut(nn.Module):
    """Option-A shortcut: subsample by 2 and zero-pad channels (no parameters)."""

    def __init__(self, pad: int) -> None:
        super().__init__()
        self.pad = pad

    def forward(self, x: Tensor) -> Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = PadShortcut((planes - in_planes) // 2)
        self.relu = nn.ReLU()  # a module (called twice, as torchvision's), so `layer3@preact` can read its last input

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for small images: ``(B, in_channels, H, W) -> (B, num_classes)`` logits."""

    def __init__(self, depth: int = 20, num_classes: int = 10, width: int = 16, in_channels: int = 3) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 (e.g. {', '.join(map(str, DEPTHS))}), got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.layer1 = self._stage(width, width, n, 1)
        self.layer2 = self._stage(width, 2 * width, n, 2)
        self.layer3 = self._stage(2 * width, 4 * width, n, 2)
        self.avgpool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.linear = nn.Linear(4 * width, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    @staticmethod
    def _stage(in_planes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [BasicBlock(in_planes, planes, stride)]
        layers += [BasicBlock(planes, planes) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.linear(self.avgpool(x))


def cifar_resnet(depth: int, num_classes: int = 10, width: int = 16, in_channels: int = 3) -> CifarResNet:
    return CifarResNet(depth, num_classes, width, in_channels)
