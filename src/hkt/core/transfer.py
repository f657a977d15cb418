"""Transfer (T): adapt a feature of one network to the shape of the matching feature of another.

Adapters are sized from the feature kinds (``hkt.core.kinds``) seen in one dry run, and return the destination's
**mix form** (channels first). ``auto``: identity when kinds agree; otherwise a channel projection, then a bilinear
resize of the spatial grid when the sizes differ. The projection is a 1x1 conv + BatchNorm into an NCHW map (CNN
children), a ``Linear`` over channels into vectors, tokens and NHWC maps (LayerNorm models). ``learned``: always a
trainable projection, initialised to the identity where the channels agree, so that step 0 equals ``auto`` but
channels of two unrelated networks can be re-aligned by training.

Between kinds: NHWC <-> NCHW is a permute; tokens <-> maps go through the patch grid (the patch tokens are the
grid, row-major); token grids of different sizes are resampled bilinearly, as timm resamples position embeddings.
Prefix tokens (class, distillation, register) are projected one to one when both sides have the same number,
pooled to one and repeated when the counts differ, and left to the destination (``keep``: its first ``keep``
positions are not supplied, so they stay native) when the source has none, e.g. a CNN parent for a ViT child.
"""

from __future__ import annotations

import typing
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hkt.core.kinds import FeatureKind, GeneShapeError


class Resize(nn.Module):
    """Bilinear resize of ``(B, C, H, W)`` to a fixed ``(H', W')``."""

    def __init__(self, size: tuple[int, int]) -> None:
        super().__init__()
        self.size = tuple(size)

    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)

    def extra_repr(self) -> str:
        return f"size={self.size}"


class Channels(nn.Module):
    """A ``Linear`` over dim 1 of a channels-first tensor of any rank: ``(B, C, *S) -> (B, C', *S)``."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.linear = linear

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x) if x.dim() == 2 else self.linear(x.movedim(1, -1)).movedim(-1, 1)


Adapter = Literal["auto", "learned"]
ADAPTERS: tuple[str, ...] = typing.get_args(Adapter)


def as_kind(shape: tuple[int, ...] | FeatureKind) -> FeatureKind:
    """A per-sample shape ``(C,)`` / ``(C, H, W)`` read the classic way (vector / NCHW map), or a kind as given."""
    if isinstance(shape, FeatureKind):
        return shape
    shape = tuple(shape)
    if len(shape) == 1:
        return FeatureKind("vector", shape[0])
    if len(shape) == 3:
        return FeatureKind("nchw", shape[0], (shape[1], shape[2]))
    raise GeneShapeError(f"cannot read a feature of per-sample shape {shape} as a vector (C,) or a map (C, H, W)")


def _pooled(kind: FeatureKind) -> bool:
    """A 1x1 map, e.g. timm MobileNetV3's ``global_pool`` (flattened later): the pooled feature, as a vector is."""
    return kind.layout in ("nchw", "nhwc") and kind.grid == (1, 1)


def check_kinds(src: FeatureKind, dst: FeatureKind, gene: str) -> None:
    if (src.layout == "vector") != (dst.layout == "vector") and not _pooled(dst if src.layout == "vector" else src):
        raise GeneShapeError(
            f"gene {gene!r}: cannot align a {src.describe()} with a {dst.describe()}. A vector (B, C) pairs with a vector "
            "or a 1x1 map (B, C, 1, 1); maps (NCHW, NHWC) and tokens pair with each other. Pick modules with the same kind "
            "of output (e.g. both `avgpool`, or a stage like `layer3` with a transformer block)."
        )


class Squeeze(nn.Module):
    """A 1x1 map in its own layout (NCHW or NHWC) as the vector ``(B, C)`` it holds."""

    def __init__(self, kind: FeatureKind) -> None:
        super().__init__()
        self.kind = kind

    def forward(self, x: Tensor) -> Tensor:
        return self.kind.to_mix(x).flatten(1)


def vector_adapter(src: FeatureKind, dst: FeatureKind, kind: str) -> nn.Module:
    """A vector and a 1x1 map, either way: the map squeezed to its vector, the channel ``Linear`` (``auto``: none when
    the channels agree), and for a map destination its mix form ``(B, C', 1, 1)``."""
    layers: list[nn.Module] = [Squeeze(src)] if src.layout != "vector" else []
    project = _projection(FeatureKind("vector", src.channels), FeatureKind("vector", dst.channels), kind)
    layers += [project] if project is not None else []
    layers += [nn.Unflatten(1, (dst.channels, 1, 1))] if dst.layout != "vector" else []
    return nn.Sequential(*layers)


def _identity_init(layer: nn.Linear | nn.Conv2d) -> nn.Module:
    """The identity map at step 0: ``eye`` for a square linear layer, ``dirac`` for a conv with C == C'."""
    (nn.init.dirac_ if isinstance(layer, nn.Conv2d) else nn.init.eye_)(layer.weight)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


def _projection(src: FeatureKind, dst: FeatureKind, kind: str) -> nn.Module | None:
    c, c2 = src.channels, dst.channels
    if c == c2 and kind == "auto":
        return None
    if dst.layout == "nchw":
        if c != c2:
            return nn.Sequential(nn.Conv2d(c, c2, 1, bias=False), nn.BatchNorm2d(c2))
        return _identity_init(nn.Conv2d(c, c2, 1))
    linear = _identity_init(nn.Linear(c, c2)) if c == c2 else nn.Linear(c, c2)
    return linear if dst.layout == "vector" else Channels(linear)


class Transfer(nn.Module):
    """Any kind to any kind (but vectors only with vectors and 1x1 maps, see ``build_adapter``): ``src``'s layout in, ``dst``'s mix form out
    (``(B, C', N - keep)`` for tokens: the first ``keep`` destination tokens are left native)."""

    def __init__(self, src: FeatureKind, dst: FeatureKind, kind: str = "auto") -> None:
        super().__init__()
        self.src, self.dst = src, dst
        self.project = _projection(src, dst, kind)
        self.resize = Resize(dst.grid) if src.spatial and src.grid != dst.grid else None
        tokens_out = dst.layout == "tokens" and dst.prefix > 0
        self.prefix = "none" if not tokens_out else ("native" if src.prefix == 0 else "match" if src.prefix == dst.prefix else "pool")
        self.keep = dst.prefix if self.prefix == "native" else 0

    def forward(self, x: Tensor) -> Tensor:
        prefix, body = self.src.split(x)
        if self.project is not None:
            body = self.project(body)
        if self.resize is not None:
            body = self.resize(body)
        if self.dst.layout != "tokens":
            return body
        body = body.flatten(2)
        if self.prefix in ("none", "native"):
            return body
        if self.prefix == "pool":
            prefix = prefix.mean(-1, keepdim=True)
        if self.project is not None:
            prefix = self.project(prefix)
        return torch.cat([prefix.expand(-1, -1, self.dst.prefix), body], -1)

    def extra_repr(self) -> str:
        return f"{self.src.describe()} -> {self.dst.describe()}, prefix={self.prefix}"


def build_adapter(src: tuple[int, ...] | FeatureKind, dst: tuple[int, ...] | FeatureKind, gene: str = "", kind: str = "auto") -> nn.Module:
    """Adapter from features of kind (or per-sample shape) ``src`` to the mix form of ``dst``.

    ``(C,) -> (C',)``: ``Linear`` (``auto``: identity when equal). ``(C, H, W) -> (C', H', W')``: 1x1 conv + BN when
    ``C != C'`` (``learned``: an identity-initialised 1x1 conv when ``C == C'``), then a resize when
    ``(H, W) != (H', W')``. A vector and a 1x1 map ``(C, 1, 1)``, either way: squeezed, ``Linear``, unsqueezed (the
    paper's pooled gene, where one network pools to a map and the other to a vector). NHWC maps and tokens: a
    ``Transfer``.
    """
    if kind not in ADAPTERS:
        raise ValueError(f"adapter must be one of {', '.join(ADAPTERS)}, got {kind!r}")
    src, dst = as_kind(src), as_kind(dst)
    check_kinds(src, dst, gene)
    if (src.layout == "vector") != (dst.layout == "vector"):
        return vector_adapter(src, dst, kind)
    if src.layout in ("vector", "nchw") and dst.layout == src.layout:
        if src == dst and kind == "auto":
            return nn.Identity()
        project = _projection(src, dst, kind)
        if src.layout == "vector":
            return project
        layers = [project] if project is not None else []
        if src.grid != dst.grid:
            layers.append(Resize(dst.grid))
        return nn.Sequential(*layers)
    return Transfer(src, dst, kind)


def describe_adapter(adapter: nn.Module) -> str:
    """The adapter's layers in one line, e.g. ``Linear(in_features=64, out_features=96) + Resize(size=(8, 8)), prefix
    tokens native``; ``identity`` when it has none."""
    parts = [repr(m).replace("\n", "") for m in adapter.modules() if not list(m.children()) and not isinstance(m, (nn.Identity, Transfer))]
    prefix = getattr(adapter, "prefix", "none")
    return (" + ".join(parts) or "identity") + (f", prefix tokens {prefix}" if prefix != "none" else "")
