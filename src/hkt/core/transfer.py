"""Transfer (T): adapt a feature of one network to the shape of the matching feature of another.

Adapters are sized from shapes seen in one dry run: identity when shapes agree, otherwise a linear
layer for vectors or a 1x1 conv + BatchNorm for maps, followed by a bilinear resize when the spatial
sizes differ.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class GeneShapeError(ValueError):
    """Two features at a gene cannot be aligned (e.g. a vector against a feature map)."""


class Resize(nn.Module):
    """Bilinear resize of ``(B, C, H, W)`` to a fixed ``(H', W')``."""

    def __init__(self, size: tuple[int, int]) -> None:
        super().__init__()
        self.size = tuple(size)

    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)

    def extra_repr(self) -> str:
        return f"size={self.size}"


def build_adapter(src: tuple[int, ...], dst: tuple[int, ...], gene: str = "") -> nn.Module:
    """Adapter mapping features of per-sample shape ``src`` to ``dst`` (shapes without the batch dim).

    ``(C,) -> (C',)``: ``Linear`` (identity when equal). ``(C, H, W) -> (C', H', W')``: 1x1 conv + BN when
    ``C != C'``, then a resize when ``(H, W) != (H', W')``.
    """
    src, dst = tuple(src), tuple(dst)
    if src == dst:
        return nn.Identity()
    if len(src) != len(dst) or len(src) not in (1, 3):
        raise GeneShapeError(
            f"gene {gene!r}: cannot align a feature of shape (B, {', '.join(map(str, src))}) with one of "
            f"shape (B, {', '.join(map(str, dst))}). Genes must pair vectors (B, C) with vectors or maps "
            "(B, C, H, W) with maps; pick modules with the same kind of output (e.g. both `avgpool`, or "
            "both a stage like `layer3`)."
        )
    if len(src) == 1:
        return nn.Linear(src[0], dst[0])
    layers: list[nn.Module] = []
    if src[0] != dst[0]:
        layers += [nn.Conv2d(src[0], dst[0], 1, bias=False), nn.BatchNorm2d(dst[0])]
    if src[1:] != dst[1:]:
        layers.append(Resize(dst[1:]))
    return nn.Sequential(*layers)
