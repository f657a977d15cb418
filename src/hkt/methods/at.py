"""``at``: attention transfer (Zagoruyko & Komodakis 2017) — ``task + beta * sum over genes of
mean((a_c - a_p)^2)``, where ``a = normalize(mean_c x^2)`` is a feature map's L2-normalised spatial attention
(p = 2). beta = 1000 on this sum, as RepDistiller (``--distill attention -b 1000``) and mdistiller
(``AT.LOSS.FEAT_WEIGHT: 1000``) train it on CIFAR. Where the maps' sizes differ, the larger one (child's or
parent's) is average-pooled to the smaller (``F.adaptive_avg_pool2d``), as mdistiller's ``single_stage_at_loss``
(``mdistiller/distillers/AT.py``)."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from hkt.core.extract import dry_run, extracting
from hkt.core.gene import parse_genes
from hkt.methods.base import Method, TaskLoss


def attention_map(x: Tensor) -> Tensor:
    """``(B, C, H, W) -> (B, H*W)``: L2-normalised channel mean of squared activations."""
    return F.normalize(x.pow(2).mean(1).flatten(1), dim=1)


def at_loss(child: Tensor, parent: Tensor) -> Tensor:
    """Mean squared difference of attention maps of ``(B, C, H, W)`` maps; the larger map is average-pooled to the
    smaller one's size first."""
    if child.shape[-2] > parent.shape[-2]:
        child = F.adaptive_avg_pool2d(child, parent.shape[-2:])
    elif parent.shape[-2] > child.shape[-2]:
        parent = F.adaptive_avg_pool2d(parent, child.shape[-2:])
    return (attention_map(child) - attention_map(parent)).pow(2).mean()


class AT(Method):
    """Attention transfer between spatial attention maps.

    Args:
        genes: the ``parent[:child]`` genes whose maps are compared (maps, not vectors).
        beta: weight of the summed attention losses (1000).
        example_input: (given by ``build_method``) reads each gene's kind, so that tokens (on their patch grid,
            without prefix tokens) and NHWC maps are attention maps too; without it every gene must be an NCHW map.
    """

    def __init__(
        self,
        child: nn.Module,
        parent: nn.Module,
        genes: Any,
        beta: float = 1000.0,
        example_input: Any = None,
        task_loss: TaskLoss = F.cross_entropy,
    ) -> None:
        super().__init__(child, parent, task_loss)
        self.genes = parse_genes(genes)
        self.beta = beta
        run = dry_run(parent, child, self.genes, example_input) if example_input is not None else None
        self.kinds = {role: run.kinds(role) if run else {} for role in ("parent", "child")}
        for g in self.genes:
            kind = self.kinds["child"].get(g.child)
            if kind is not None and not kind.spatial:
                raise ValueError(f"attention transfer needs feature maps or tokens; gene {g.name!r} is a {kind.describe()}")

    def _map(self, role: str, path: str, t: Tensor) -> Tensor:
        kind = self.kinds[role].get(path)
        return kind.as_map(t) if kind is not None else t

    def forward_train(self, x: Any, y: Any) -> tuple[Any, dict[str, Tensor]]:
        _, pf = self.read_parent(x, self.genes)
        with extracting(self.child, self.genes, "child") as cf:
            out = self.child(x)
        maps = [(self._map("child", g.child, cf[g.child]), self._map("parent", g.parent, pf[g.parent]), g) for g in self.genes]
        for c, _, g in maps:
            if c.dim() != 4:
                raise ValueError(f"attention transfer needs feature maps (B, C, H, W); gene {g.name!r} is {tuple(c.shape)}")
        loss = sum(at_loss(c, p) for c, p, _ in maps)
        return out, {"task": self.task_loss(out, y), "at": self.beta * loss}
