"""Transfer (T): adapt a feature of one network to the shape of the matching feature of another.

Adapters are sized from shapes seen in one dry run. ``auto``: identity when shapes agree, otherwise a linear
layer for vectors or a 1x1 conv + BatchNorm for maps, followed by a bilinear resize when the spatial sizes
differ. ``learned``: always a trainable layer, initialised to the identity where the channels agree, so that
step 0 equals ``auto`` but channels of two unrelated networks can be re-aligned by training.

``hint_regressor`` is FitNet's regressor as the common implementations build it (RepDistiller and mdistiller
``ConvReg``): a conv chosen by the spatial ratio, then BatchNorm and ReLU; a linear layer for vectors.
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


ADAPTERS = ("auto", "learned")


def _check_kinds(src: tuple[int, ...], dst: tuple[int, ...], gene: str) -> None:
    if len(src) != len(dst) or len(src) not in (1, 3):
        raise GeneShapeError(
            f"gene {gene!r}: cannot align a feature of shape (B, {', '.join(map(str, src))}) with one of "
            f"shape (B, {', '.join(map(str, dst))}). Genes must pair vectors (B, C) with vectors or maps "
            "(B, C, H, W) with maps; pick modules with the same kind of output (e.g. both `avgpool`, or "
            "both a stage like `layer3`)."
        )


def _identity_init(layer: nn.Linear | nn.Conv2d) -> nn.Module:
    """The identity map at step 0: ``eye`` for a square linear layer, ``dirac`` for a conv with C == C'."""
    (nn.init.dirac_ if isinstance(layer, nn.Conv2d) else nn.init.eye_)(layer.weight)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


def build_adapter(src: tuple[int, ...], dst: tuple[int, ...], gene: str = "", kind: str = "auto") -> nn.Module:
    """Adapter mapping features of per-sample shape ``src`` to ``dst`` (shapes without the batch dim).

    ``(C,) -> (C',)``: ``Linear`` (``auto``: identity when equal). ``(C, H, W) -> (C', H', W')``: 1x1 conv + BN when
    ``C != C'`` (``learned``: an identity-initialised 1x1 conv when ``C == C'``), then a resize when
    ``(H, W) != (H', W')``.
    """
    src, dst = tuple(src), tuple(dst)
    if kind not in ADAPTERS:
        raise ValueError(f"adapter must be one of {', '.join(ADAPTERS)}, got {kind!r}")
    _check_kinds(src, dst, gene)
    if src == dst and kind == "auto":
        return nn.Identity()
    if len(src) == 1:
        return _identity_init(nn.Linear(src[0], dst[0])) if src == dst else nn.Linear(src[0], dst[0])
    layers: list[nn.Module] = []
    if src[0] != dst[0]:
        layers += [nn.Conv2d(src[0], dst[0], 1, bias=False), nn.BatchNorm2d(dst[0])]
    elif kind == "learned":
        layers.append(_identity_init(nn.Conv2d(src[0], dst[0], 1)))
    if src[1:] != dst[1:]:
        layers.append(Resize(dst[1:]))
    return nn.Sequential(*layers)


def hint_regressor(src: tuple[int, ...], dst: tuple[int, ...], gene: str = "") -> nn.Module:
    """FitNet's learned regressor from the child's feature shape ``src`` to the parent's ``dst``, always built
    (even when shapes agree): the child's channels are not the parent's channels.

    Maps: a conv chosen from the heights (``H = 2H'``: 3x3 stride 2; ``2H = H'``: 4x4 transposed, stride 2;
    ``H >= H'``: kernel ``1 + H - H'``), then BatchNorm and ReLU, as RepDistiller's and mdistiller's ``ConvReg``.
    Vectors: ``Linear``.
    """
    src, dst = tuple(src), tuple(dst)
    _check_kinds(src, dst, gene)
    if len(src) == 1:
        return nn.Linear(src[0], dst[0])
    (c, h, w), (c2, h2, w2) = src, dst
    if h == 2 * h2:
        conv: nn.Module = nn.Conv2d(c, c2, 3, stride=2, padding=1)
    elif 2 * h == h2:
        conv = nn.ConvTranspose2d(c, c2, 4, stride=2, padding=1)
    elif h >= h2 and w >= w2:
        conv = nn.Conv2d(c, c2, (1 + h - h2, 1 + w - w2))
    else:
        raise GeneShapeError(f"gene {gene!r}: no FitNet regressor from {h}x{w} up to {h2}x{w2}; pick a child gene at least as large")
    return nn.Sequential(conv, nn.BatchNorm2d(c2), nn.ReLU())
