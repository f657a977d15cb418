"""``at``: attention transfer (Zagoruyko & Komodakis 2017) — ``task + beta * sum over genes of
mean((a_c - a_p)^2)``, where ``a = normalize(mean_c x^2)`` is a feature map's L2-normalised spatial attention
(p = 2). beta = 1000 on this sum, as RepDistiller (``--distill attention -b 1000``) and mdistiller
(``AT.LOSS.FEAT_WEIGHT: 1000``) train it on CIFAR. Where heights differ, we resize the parent's map bilinearly
to the child's (RepDistiller and mdistiller average-pool the larger one; the two agree for the CIFAR ResNet
stages, which have equal sizes)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hkt.core.extract import extracting
from hkt.core.gene import parse_genes
from hkt.methods.base import Method, TaskLoss


def attention_map(x: Tensor) -> Tensor:
    """``(B, C, H, W) -> (B, H*W)``: L2-normalised channel mean of squared activations."""
    return F.normalize(x.pow(2).mean(1).flatten(1), dim=1)


def at_loss(child: Tensor, parent: Tensor) -> Tensor:
    """Mean squared difference of attention maps; the parent map is resized to the child's when needed."""
    if parent.shape[-2:] != child.shape[-2:]:
        parent = F.interpolate(parent, size=child.shape[-2:], mode="bilinear", align_corners=False)
    return (attention_map(child) - attention_map(parent)).pow(2).mean()


class AT(Method):
    uses_hooks = True  # Extraction / Mixture hooks per step

    def __init__(
        self, child: nn.Module, parent: nn.Module, genes: Any, beta: float = 1000.0, task_loss: TaskLoss = F.cross_entropy
    ) -> None:
        super().__init__(child, parent, task_loss)
        self.genes = parse_genes(genes)
        self.beta = beta

    def forward_train(self, x: Any, y: Any) -> tuple[Any, dict[str, Tensor]]:
        with torch.no_grad(), extracting(self.parent, [g.parent for g in self.genes], "parent") as pf:
            self.parent(x)
        with extracting(self.child, [g.child for g in self.genes], "child") as cf:
            out = self.child(x)
        for g in self.genes:
            if cf[g.child].dim() != 4:
                raise ValueError(f"attention transfer needs feature maps (B, C, H, W); gene {g.name!r} is {tuple(cf[g.child].shape)}")
        loss = sum(at_loss(cf[g.child], pf[g.parent]) for g in self.genes)
        return out, {"task": self.task_loss(out, y), "at": self.beta * loss}
