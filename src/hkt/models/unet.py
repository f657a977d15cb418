"""One configurable U-Net (Ronneberger et al. 2015), so that a wide parent and a narrow child come from the
same code and their genes sit at the same module paths.

Module paths (depth ``d``): ``encoder.0`` (full resolution) … ``encoder.{d-1}``, ``bottleneck``
(``1/2^d`` resolution, ``width * 2^d`` channels), ``decoder.0`` (the deepest up-block) … ``decoder.{d-1}``
(full resolution), ``head`` (1x1 conv to class logits). Each decoder block is one module called with
``(x, skip)``, so a decoder block's output, the skip included, is one gene.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class Down(nn.Sequential):
    """2x max-pool, then two 3x3 conv-BN-ReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(nn.MaxPool2d(2), *double_conv(cin, cout))


class Up(nn.Module):
    """Bilinear 2x upsampling, concatenation with the skip, two 3x3 conv-BN-ReLU."""

    def __init__(self, cin: int, cskip: int, cout: int) -> None:
        super().__init__()
        self.conv = double_conv(cin + cskip, cout)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        """``x (B, cin, h, w)``, ``skip (B, cskip, 2h, 2w)`` -> ``(B, cout, 2h, 2w)``."""
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.conv(torch.cat([x, skip], dim=1))


class UNet(nn.Module):
    """Args:
        in_channels: input channels (1 for a CT slice, ``2k+1`` for 2.5-D input).
        num_classes: output logits per pixel.
        width: channels of the first level; level ``i`` has ``width * 2^i``.
        depth: number of 2x down-samplings; inputs must be divisible by ``2^depth``.
    Shapes: ``(B, in_channels, H, W) -> (B, num_classes, H, W)``.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 3, width: int = 32, depth: int = 4) -> None:
        super().__init__()
        if depth < 1 or width < 1:
            raise ValueError(f"UNet needs depth >= 1 and width >= 1, got depth={depth}, width={width}")
        self.depth = depth
        chans = [width * 2**i for i in range(depth + 1)]
        self.encoder = nn.ModuleList([double_conv(in_channels, chans[0])] + [Down(chans[i - 1], chans[i]) for i in range(1, depth)])
        self.bottleneck = Down(chans[depth - 1], chans[depth])
        self.decoder = nn.ModuleList([Up(chans[i + 1], chans[i], chans[i]) for i in reversed(range(depth))])
        self.head = nn.Conv2d(chans[0], num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] % 2**self.depth or x.shape[-2] % 2**self.depth:
            raise ValueError(f"UNet of depth {self.depth} needs H and W divisible by {2**self.depth}, got {tuple(x.shape[-2:])}")
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
        x = self.bottleneck(x)
        for block, skip in zip(self.decoder, reversed(skips)):
            x = block(x, skip)
        return self.head(x)
