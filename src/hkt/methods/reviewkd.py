"""``reviewkd``: Distilling Knowledge via Knowledge Review (Chen et al., CVPR 2021) —
``task + w(t) * reviewkd_weight * sum over genes of HCL(review_i, parent_i)``.

The child's genes (shallow to deep) are "reviewed" from the deepest one down: each passes an attention-based
fusion block (ABF: 1x1 conv + BN to ``mid`` channels; from the second deepest on, fused with the upsampled result
of the deeper one by two per-position sigmoid weights; then a 3x3 conv + BN to the parent's channels at the parent's
size). Hierarchical context loss (HCL): MSE at full size plus MSE of 4x4, 2x2, 1x1 average pools, weights 1, ½, ¼, ⅛,
normalised. A vector gene (e.g. the pooled feature) counts as a 1x1 map. The ABF blocks train with the child and
are never exported.

The parent's targets are its **pre-activation** stage outputs (``preact: true``), as both authors' codes read them:
dvlab's ``teacher(images, is_feat=True, preact=True)`` and mdistiller's ``features_teacher["preact_feats"]``; the
child's features are post-activation (mdistiller's ``REVIEWKD.STU_PREACT: False``). Each parent gene whose block
calls an activation module is read before its last one (``<path>@preact``, a reader defined here): for a ResNet stage,
the residual sum before the final ReLU, which takes negative values; a gene without one (the pooled feature) is
read as it is, as the authors do. Defaults as mdistiller (``mdistiller/distillers/ReviewKD.py``; weight 5.0 from
its CIFAR config ``configs/cifar100/reviewkd.yaml``, ``REVIEWKD_WEIGHT: 5.0``; 1.0 is only the ``cfg.py``
fallback): warm-up 20 epochs, mid channels ``min(512, deepest child channels)``, nearest-neighbour resizing.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from hkt.core.extract import READERS, Hook, dry_run, extracting
from hkt.core.gene import Gene, parse_genes
from hkt.core.kinds import GeneShapeError
from hkt.core.paths import module_at
from hkt.methods.base import Method, TaskLoss, WarmedUp, WarmupUnit

PREACT = "@preact"
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Hardswish, nn.ELU)


def _preact_hook(block: nn.Module, path: str, role: str, hook: Hook, handles: list[RemovableHandle]) -> None:
    """Call ``hook`` with the block's *pre-activation*: the input of the last activation module it called (a
    ResNet stage: the residual sum before its final ReLU), cloned because activations may run in place."""
    acts = [m for m in block.modules() if isinstance(m, ACTIVATIONS)]
    if not acts:
        raise GeneShapeError(
            f"{role} block {path!r}: no activation module ({', '.join(a.__name__ for a in ACTIVATIONS)}) inside "
            f"{type(block).__name__} to read the pre-activation from (a functional F.relu cannot be hooked); drop {PREACT} "
            "or pick a block that calls an activation module"
        )
    last: list[Tensor] = []

    def before(_m: nn.Module, args: tuple[Any, ...]) -> None:
        last[:] = [args[0].clone()]

    handles.extend(a.register_forward_pre_hook(before) for a in acts)
    handles.append(block.register_forward_hook(lambda m, inp, _out: hook(m, inp, last[0])))


READERS[PREACT] = _preact_hook  # `<block>@preact` paths, for every method that reads genes (fitnet, at too)


def hcl_loss(student: list[Tensor], teacher: list[Tensor]) -> Tensor:
    """Hierarchical context loss summed over pairs of ``(B, C, H, W)`` maps."""
    total = student[0].new_zeros(())
    for fs, ft in zip(student, teacher):
        loss, weight, norm = F.mse_loss(fs, ft), 1.0, 1.0
        for level in (4, 2, 1):
            if level >= fs.shape[2]:
                continue
            weight /= 2.0
            loss = loss + weight * F.mse_loss(F.adaptive_avg_pool2d(fs, level), F.adaptive_avg_pool2d(ft, level))
            norm += weight
        total = total + loss / norm
    return total


class ABF(nn.Module):
    """Attention-based fusion: ``x (B, C_in, h, w)`` [+ the deeper review ``y (B, mid, h', w')``] -> the review at
    the parent's size ``(B, C_out, H, W)`` and the fused ``mid``-channel map passed to the next (shallower) block."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, fuse: bool) -> None:
        super().__init__()
        self.reduce = nn.Sequential(nn.Conv2d(in_channels, mid_channels, 1, bias=False), nn.BatchNorm2d(mid_channels))
        self.out = nn.Sequential(nn.Conv2d(mid_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels))
        self.attention = nn.Sequential(nn.Conv2d(2 * mid_channels, 2, 1), nn.Sigmoid()) if fuse else None
        nn.init.kaiming_uniform_(self.reduce[0].weight, a=1)
        nn.init.kaiming_uniform_(self.out[0].weight, a=1)

    def forward(self, x: Tensor, y: Tensor | None, out_size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        x = self.reduce(x)
        if self.attention is not None and y is not None:
            y = F.interpolate(y, size=x.shape[-2:], mode="nearest")
            z = self.attention(torch.cat([x, y], 1))
            x = x * z[:, :1] + y * z[:, 1:]
        if tuple(x.shape[-2:]) != tuple(out_size):
            x = F.interpolate(x, size=out_size, mode="nearest")
        return self.out(x), x


def _as_map(t: Tensor) -> Tensor:
    return t[..., None, None] if t.dim() == 2 else t


def _preact(gene: Gene, parent: nn.Module) -> Gene:
    """``gene`` with its parent side read before the block's last activation, where the block calls one."""
    if gene.parent.endswith(PREACT):
        return gene
    block = module_at(parent, gene.parent, "parent")
    if not any(isinstance(m, ACTIVATIONS) for m in block.modules()):
        return gene
    return dataclasses.replace(gene, parent=gene.parent + PREACT)


def _pairs(genes: Any) -> list[Gene]:
    """Genes as pairs (``[a, b:c, ...]``) or as two lists ``{parent: [...], child: [...]}`` of equal length."""
    if isinstance(genes, dict) and isinstance(genes.get("parent"), list):
        parent, child = genes["parent"], genes.get("child", genes["parent"])
        if len(parent) != len(child):
            raise ValueError(
                f"reviewkd pairs genes one to one: {len(parent)} parent gene(s) {parent} but {len(child)} child gene(s) "
                f"{child}; give method.genes the same number of parent and child paths"
            )
        return parse_genes([{"parent": p, "child": c} for p, c in zip(parent, child)])
    return parse_genes(genes)


class ReviewKD(WarmedUp, Method):
    """Knowledge review: ABF fusion of the child's genes from the deepest down, HCL against the parent's.

    Args:
        genes: the ``parent[:child]`` genes, shallow to deep (or ``{parent: [...], child: [...]}``).
        reviewkd_weight: weight of the summed HCL terms (5.0, mdistiller's CIFAR config).
        task_weight: weight of the task loss.
        warmup: length of the linear warm-up of the review term, in ``warmup_unit`` (20 epochs).
        warmup_unit: ``epochs`` or ``steps``.
        preact: read the parent's genes before their last activation, as the authors do.
    """

    warm_name = "reviewkd"

    def __init__(
        self,
        child: nn.Module,
        parent: nn.Module,
        genes: Any,
        example_input: Any,
        reviewkd_weight: float = 5.0,
        task_weight: float = 1.0,
        warmup: float = 20.0,
        warmup_unit: WarmupUnit = "epochs",
        preact: bool = True,
        task_loss: TaskLoss = F.cross_entropy,
    ) -> None:
        super().__init__(child, parent, task_loss)
        self.genes = _pairs(genes)
        if preact:
            self.genes = [_preact(g, parent) for g in self.genes]
        self.reviewkd_weight, self.task_weight, self.warmup, self.warmup_unit = reviewkd_weight, task_weight, warmup, warmup_unit
        run = dry_run(parent, child, self.genes, example_input)
        # tokens and NHWC maps are reviewed as NCHW maps on their grid (hkt.core.kinds)
        self.kinds = {role: run.kinds(role) for role in ("parent", "child")}
        c_shapes = [tuple(self._map("child", g.child, run.child[g.child]).shape[1:]) for g in self.genes]
        p_shapes = [tuple(self._map("parent", g.parent, run.parent[g.parent]).shape[1:]) for g in self.genes]
        for g, c, p in zip(self.genes, c_shapes, p_shapes):
            if len(c) != 3 or len(p) != 3:
                raise ValueError(f"reviewkd gene {g.name!r}: needs feature maps or vectors, got shapes {c} and {p}")
        mid = min(512, c_shapes[-1][0])
        # built deepest first, as the review runs; the deepest block has nothing to fuse with
        self.abfs = nn.ModuleList(ABF(c[0], mid, p[0], fuse=i > 0) for i, (c, p) in enumerate(zip(reversed(c_shapes), reversed(p_shapes))))
        self.out_sizes = [p[1:] for p in reversed(p_shapes)]

    def _map(self, role: str, path: str, t: Tensor) -> Tensor:
        return _as_map(self.kinds[role][path].as_map(t))

    def forward_train(self, x: Any, y: Any) -> tuple[Any, dict[str, Tensor]]:
        _, pf = self.read_parent(x, self.genes)
        with extracting(self.child, self.genes, "child") as cf:
            out = self.child(x)
        feats = [self._map("child", g.child, cf[g.child]) for g in reversed(self.genes)]
        reviews, residual = [], None
        for abf, f, size in zip(self.abfs, feats, self.out_sizes):
            review, residual = abf(f, residual, size)
            reviews.append(review)
        targets = [self._map("parent", g.parent, pf[g.parent]) for g in reversed(self.genes)]
        return out, {
            "task": self.task_weight * self.task_loss(out, y),
            "review": self.warm * self.reviewkd_weight * hcl_loss(reviews, targets),
        }
