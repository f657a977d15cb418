"""Feature kinds: what a gene's tensor *is*, so that Transfer and Mixture never guess from its rank alone.

A gene's feature is one of

- ``vector``  ``(B, C)``: a pooled feature;
- ``nchw``    ``(B, C, H, W)``: a CNN stage;
- ``nhwc``    ``(B, H, W, C)``: a channels-last stage (timm Swin, MaxViT-style stages);
- ``tokens``  ``(B, N, C)`` with ``N = P + h * w``: ``P`` prefix tokens (class, distillation, register tokens),
  then the patch tokens of an ``h x w`` grid, row-major (timm and Hugging Face ViTs, DeiT, Swin in HF).

Every kind has a **mix form**, channels first: ``(B, C)``, ``(B, C, H, W)``, or ``(B, C, N)`` for tokens. Genetic
Attention works on it (one gate per sample, per position or per token) and Transfer produces it.

The kind is read from, in this order: the gene spec (``layout: nchw | nhwc | tokens``, ``prefix_tokens: P``); the
model's own metadata (timm's ``num_prefix_tokens``, ``patch_embed.grid_size`` and ``output_fmt``; a Hugging Face
config's ``model_type``); the shape against the input's ``H x W``. A 4-D tensor is a map in whichever order puts a
grid of the input's aspect ratio in its spatial axes; when both orders do (``(B, 8, 8, 8)`` from a 32x32 input) and
nothing declares it, that is an error, never a silent NCHW.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

LAYOUTS = ("vector", "nchw", "nhwc", "tokens")


class GeneShapeError(ValueError):
    """A gene's features cannot be read or aligned (a vector against a map, an unknown token grid, ...)."""


# prefix tokens of Hugging Face vision transformers by config.model_type (class token; DeiT adds a distillation
# token); register tokens are added from config.num_register_tokens
HF_PREFIX_TOKENS = {
    "vit": 1,
    "deit": 2,
    "beit": 1,
    "data2vec-vision": 1,
    "dinov2": 1,
    "dinov2_with_registers": 1,
    "vit_msn": 1,
    "vit_mae": 1,
    "dpt": 1,
    "ijepa": 0,
    "swin": 0,
    "swinv2": 0,
    "donut-swin": 0,
    "clip_vision_model": 1,
    "siglip_vision_model": 0,
}


@dataclass(frozen=True)
class Hint:
    """What a gene spec or a model says about a feature; ``None`` = not stated."""

    layout: str | None = None
    prefix_tokens: int | None = None
    grid: tuple[int, int] | None = None  # a ViT's patch grid at the input size it was built for

    def __post_init__(self) -> None:
        if self.layout is not None and self.layout not in LAYOUTS:
            raise ValueError(f"gene layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        if self.prefix_tokens is not None and (not isinstance(self.prefix_tokens, int) or self.prefix_tokens < 0):
            raise ValueError(f"gene prefix_tokens must be a whole number >= 0, got {self.prefix_tokens!r}")


@dataclass(frozen=True)
class FeatureKind:
    """A gene feature's layout, channels, spatial grid ``(h, w)`` (maps and token patch grids) and prefix tokens."""

    layout: str
    channels: int
    grid: tuple[int, int] | None = None
    prefix: int = 0

    @property
    def rank(self) -> int:
        """Rank of the mix form: 2 (vectors), 3 (tokens), 4 (maps)."""
        return {"vector": 2, "tokens": 3}.get(self.layout, 4)

    @property
    def spatial(self) -> bool:
        return self.layout != "vector"

    def to_mix(self, t: Tensor) -> Tensor:
        """Own layout -> mix form (channels first)."""
        if self.layout == "nhwc":
            return t.permute(0, 3, 1, 2)
        if self.layout == "tokens":
            return t.transpose(1, 2)
        return t

    def from_mix(self, t: Tensor) -> Tensor:
        """Mix form -> own layout."""
        if self.layout == "nhwc":
            return t.permute(0, 2, 3, 1)
        if self.layout == "tokens":
            return t.transpose(1, 2)
        return t

    def split(self, t: Tensor) -> tuple[Tensor | None, Tensor]:
        """Own layout -> ``(prefix (B, C, P) or None, body)`` with body ``(B, C)`` or a grid ``(B, C, h, w)``."""
        m = self.to_mix(t)
        if self.layout != "tokens":
            return None, m
        h, w = self.grid
        prefix = m[:, :, : self.prefix] if self.prefix else None
        return prefix, m[:, :, self.prefix :].reshape(m.shape[0], m.shape[1], h, w)

    def as_map(self, t: Tensor) -> Tensor:
        """The feature as feature methods (FitNet, AT, ReviewKD) read it: a vector ``(B, C)`` or a map ``(B, C, h, w)``
        (an NHWC map permuted; tokens without their prefix tokens, on their patch grid)."""
        return self.split(t)[1]

    def describe(self) -> str:
        if self.layout == "vector":
            return f"vector (B, {self.channels})"
        h, w = self.grid
        if self.layout == "nchw":
            return f"map NCHW (B, {self.channels}, {h}, {w})"
        if self.layout == "nhwc":
            return f"map NHWC (B, {h}, {w}, {self.channels})"
        return f"tokens (B, {self.prefix}+{h}x{w}, {self.channels}), {self.prefix} prefix"


def _map_layout(model: nn.Module) -> str | None:
    """How a model lays out its 4-D maps, where that can be known: ``output_fmt`` (timm), the conventions of
    timm, transformers, torchvision (whose Swin is channels-last) and hkt's zoo, or a model without LayerNorm (its
    norms, BatchNorm / GroupNorm, normalise dim 1: NCHW). ``None`` for another model with LayerNorm."""
    fmt = str(getattr(model, "output_fmt", "")).upper()
    if fmt in ("NHWC", "NCHW"):
        return fmt.lower()
    module = type(model).__module__
    if module.startswith("torchvision.models.swin_transformer"):
        return "nhwc"
    if module.split(".")[0] in ("timm", "transformers", "torchvision", "hkt"):
        return "nchw"
    return None if any(isinstance(m, nn.LayerNorm) for m in model.modules()) else "nchw"


def model_hint(model: nn.Module) -> Hint:
    """What a model says of its features: timm (``num_prefix_tokens``, ``patch_embed.grid_size``, ``output_fmt``) or a
    Hugging Face config (``model_type``, ``image_size`` / ``patch_size``)."""
    prefix = getattr(model, "num_prefix_tokens", None)
    layout = _map_layout(model)
    grid = getattr(getattr(model, "patch_embed", None), "grid_size", None)
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if prefix is None and model_type is not None:
        # a *ForImageClassification keeps the backbone's config; vision configs nested in CLIP-like ones are not read
        prefix = HF_PREFIX_TOKENS.get(model_type)
        if prefix is not None:
            prefix += int(getattr(config, "num_register_tokens", 0) or 0)
        image, patch = getattr(config, "image_size", None), getattr(config, "patch_size", None)
        if isinstance(image, int) and isinstance(patch, int) and patch > 0:
            grid = (image // patch, image // patch)
    grid = tuple(int(g) for g in grid) if grid is not None and len(grid) == 2 else None
    return Hint(layout, prefix if isinstance(prefix, int) else None, grid)


def input_size(example_input: Any) -> tuple[int, int] | None:
    """``(H, W)`` of the first tensor of a model input with at least 3 dims (images, stacked frame pairs)."""
    from torch.utils import _pytree as pytree

    for leaf in pytree.tree_leaves(example_input):
        if isinstance(leaf, Tensor) and leaf.dim() >= 3:
            return int(leaf.shape[-2]), int(leaf.shape[-1])
    return None


def _fits(h: int, w: int, size: tuple[int, int] | None) -> bool:
    """``h x w`` is a grid of an ``H x W`` input: no larger than it, with its aspect ratio up to the rounding of a
    stride (``h = H / s`` rounded up or down, likewise ``w``, leaves ``|h W - w H| < max(H, W)``)."""
    if size is None:
        return True
    big_h, big_w = size
    return 0 < h <= big_h and 0 < w <= big_w and abs(h * big_w - w * big_h) < max(big_h, big_w)


def _token_grid(n: int, prefix: int, size: tuple[int, int] | None) -> tuple[int, int] | None:
    """The ``h x w`` patch grid of ``n - prefix`` tokens with the input's aspect ratio, or ``None``."""
    cells = n - prefix
    if cells <= 0:
        return None
    ratio = size[0] / size[1] if size else 1.0
    h = max(1, round(math.sqrt(cells * ratio)))
    for hh in (h, h - 1, h + 1):
        if hh > 0 and cells % hh == 0 and _fits(hh, cells // hh, size):
            return hh, cells // hh
    return None


def infer_kind(t: Tensor, role: str, path: str, size: tuple[int, int] | None, declared: Hint, model: Hint) -> FeatureKind:
    """The kind of gene feature ``t``, the output of ``role``'s (parent / child) block ``path``, from the gene spec's
    declaration, the model's hint and the shape against the input size ``(H, W)``.

    Raises ``GeneShapeError`` with the path, the shape and the fix when the kind cannot be known for sure."""
    shape = tuple(t.shape)
    layout = declared.layout
    where = f"{role} block {path!r}"
    fix = f"declare it in the gene spec: {{parent: ..., child: ..., {role}_layout: nchw | nhwc}}"
    if t.dim() == 2:
        if layout not in (None, "vector"):
            raise GeneShapeError(f"{where}: declared layout {layout!r}, but its output {shape} is a vector (B, C)")
        return FeatureKind("vector", shape[1])
    if t.dim() == 3:
        if layout not in (None, "tokens"):
            raise GeneShapeError(f"{where}: declared layout {layout!r}, but its output {shape} has 3 dims (tokens (B, N, C))")
        prefix = declared.prefix_tokens if declared.prefix_tokens is not None else model.prefix_tokens
        if prefix is None:
            raise GeneShapeError(
                f"{where}: output {shape} looks like tokens (B, N, C), but nothing says how many of the {shape[1]} tokens "
                "are prefix (class / register) tokens before the patch grid; set prefix_tokens in the gene spec, e.g. "
                f"{{parent: ..., child: ..., {role}_prefix_tokens: 1}}"
            )
        # the model's own patch grid where it accounts for the tokens (a ViT block); else the input's aspect ratio (a
        # Swin stage, whose grid shrinks stage by stage)
        grid = model.grid if model.grid and prefix + model.grid[0] * model.grid[1] == shape[1] else None
        grid = grid or _token_grid(shape[1], prefix, size)
        if grid is None:
            raise GeneShapeError(
                f"{where}: {shape[1]} tokens with {prefix} prefix token(s) leave {shape[1] - prefix}, which is no patch grid "
                f"of the {size[0]}x{size[1]} input; set the right {role}_prefix_tokens in the gene spec"
                if size
                else f"{where}: cannot find the patch grid of {shape[1]} tokens; set {role}_prefix_tokens in the gene spec"
            )
        return FeatureKind("tokens", shape[2], grid, prefix)
    if t.dim() != 4:
        raise GeneShapeError(f"{where}: output {shape} is neither a vector, a map nor tokens; pick another module")
    _, a, b, c = shape
    nchw, nhwc = _fits(b, c, size), _fits(a, b, size)
    if layout is None:
        if nchw != nhwc:
            layout = "nchw" if nchw else "nhwc"
        elif nchw and model.layout is not None:
            layout = model.layout
        elif nchw:
            raise GeneShapeError(
                f"{where}: output {shape} is ambiguous: it reads as NCHW (C={a}, {b}x{c}) and as NHWC ({a}x{b}, C={c}) on "
                f"the {size[0]}x{size[1]} input; {fix}"
            )
        else:
            raise GeneShapeError(
                f"{where}: output {shape} is no grid of the {size[0]}x{size[1]} input in either order (NCHW or NHWC); "
                f"if it is a map all the same, {fix}"
            )
    elif layout not in ("nchw", "nhwc"):
        raise GeneShapeError(f"{where}: declared layout {layout!r}, but its output {shape} has 4 dims (a map)")
    elif not (nchw if layout == "nchw" else nhwc) and (nhwc if layout == "nchw" else nchw):
        raise GeneShapeError(
            f"{where}: declared layout {layout}, but {shape} is a grid of the input only in the other order; check the layout"
        )
    return FeatureKind("nchw", a, (b, c)) if layout == "nchw" else FeatureKind("nhwc", c, (a, b))
