"""``fitnet``: Romero et al. 2015 — ``task + hint_weight * MSE(regressor(child feature), parent feature)`` at one
gene (the "hint"), trained in one stage with the task loss, as RepDistiller (``--distill hint -b 100``) and
mdistiller (``FITNET.LOSS.FEAT_WEIGHT: 100``) train it on CIFAR: the regressor is always learned
(``hint_regressor``: conv + BN + ReLU for maps, linear for vectors), and the hint weight defaults to 100."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from hkt.core.extract import dry_run, extracting
from hkt.core.gene import Gene, parse_genes
from hkt.core.kinds import GeneShapeError
from hkt.core.transfer import as_kind, check_kinds, vector_adapter
from hkt.methods.base import Method, TaskLoss


def hint_regressor(src: tuple[int, ...], dst: tuple[int, ...], gene: str = "") -> nn.Module:
    """FitNet's learned regressor from the child's feature shape ``src`` to the parent's ``dst``, always built
    (even when shapes agree): the child's channels are not the parent's channels.

    Maps: a conv chosen from the heights (``H = 2H'``: 3x3 stride 2; ``2H = H'``: 4x4 transposed, stride 2;
    ``H >= H'``: kernel ``1 + H - H'``), then BatchNorm and ReLU, as RepDistiller's and mdistiller's ``ConvReg``.
    Vectors: ``Linear``.
    """
    src, dst = tuple(src), tuple(dst)
    check_kinds(as_kind(src), as_kind(dst), gene)
    if len(src) == 1 and len(dst) == 1:
        return nn.Linear(src[0], dst[0])
    if len(src) == 1 or len(dst) == 1:  # a vector and a 1x1 map
        return vector_adapter(as_kind(src), as_kind(dst), "learned")
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


class FitNet(Method):
    """FitNets' hint, trained in one stage with the task loss.

    Args:
        genes: exactly one ``parent[:child]`` gene, the hint.
        hint_weight: weight of the MSE between the regressed child feature and the parent's (100).
    """

    def __init__(
        self,
        child: nn.Module,
        parent: nn.Module,
        genes: Any,
        example_input: Any,
        hint_weight: float = 100.0,
        task_loss: TaskLoss = F.cross_entropy,
    ) -> None:
        super().__init__(child, parent, task_loss)
        genes = parse_genes(genes)
        if len(genes) != 1:
            raise ValueError(f"fitnet uses exactly one hint gene, got {len(genes)}: {[g.name for g in genes]}")
        self.gene: Gene = genes[0]
        self.genes = genes
        self.hint_weight = hint_weight
        run = dry_run(parent, child, genes, example_input)
        # tokens and NHWC maps are read as NCHW maps on their grid (hkt.core.kinds), so the regressor is ConvReg's
        self.parent_kind, self.child_kind = run.parent_kinds[self.gene.parent], run.child_kinds[self.gene.child]
        p = self.parent_kind.as_map(run.parent[self.gene.parent])
        c = self.child_kind.as_map(run.child[self.gene.child])
        self.regressor = hint_regressor(tuple(c.shape[1:]), tuple(p.shape[1:]), self.gene.name)

    def forward_train(self, x: Any, y: Any) -> tuple[Any, dict[str, Tensor]]:
        _, pf = self.read_parent(x, self.genes)
        with extracting(self.child, self.genes, "child") as cf:
            out = self.child(x)
        hint = F.mse_loss(self.regressor(self.child_kind.as_map(cf[self.gene.child])), self.parent_kind.as_map(pf[self.gene.parent]))
        return out, {"task": self.task_loss(out, y), "hint": self.hint_weight * hint}
