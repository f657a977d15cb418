"""Semantic segmentation: per-pixel cross-entropy (optionally + soft Dice) as the task loss; Dice per region
and mean IoU from torchmetrics, accumulated over the whole split (global, not per slice).

Regions are sets of labels scored as one foreground, as in the LiTS challenge: ``liver`` = labels {1, 2}
(liver including tumour), ``tumour`` = {2}. The data module names them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassJaccardIndex
from torchmetrics.segmentation import DiceScore

from hkt.data.segmentation import SegmentationData
from hkt.tasks.base import Task


def soft_dice_loss(logits: Tensor, target: Tensor) -> Tensor:
    """``1 - mean over foreground classes of soft Dice``; ``logits (B, K, H, W)``, ``target (B, H, W)``.

    Sums run over the whole batch (one Dice per class), so a class absent from one slice does not dominate."""
    probs = logits.softmax(1)[:, 1:]
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2)[:, 1:].to(probs.dtype)
    inter = (probs * onehot).sum((0, 2, 3))
    denom = probs.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    return 1.0 - ((2 * inter + 1.0) / (denom + 1.0)).mean()


class RegionDice(DiceScore):
    """Dice of label regions, global over the split, mean over the regions given.

    ``update(preds, target)``: ``preds`` logits ``(B, K, H, W)`` or labels ``(B, H, W)``; ``target`` labels ``(B, H, W)``.
    """

    def __init__(self, regions: Sequence[Sequence[int]], **kwargs: Any) -> None:
        super().__init__(
            num_classes=1 + len(regions),
            include_background=False,
            average="macro",
            aggregation_level="global",
            input_format="one-hot",
            **kwargs,
        )
        self.regions = [torch.tensor(list(r)) for r in regions]

    def _masks(self, labels: Tensor) -> Tensor:
        fg = [torch.isin(labels, r.to(labels.device)) for r in self.regions]
        return torch.stack([~torch.stack(fg).any(0), *fg], dim=1).long()

    def update(self, preds: Tensor, target: Tensor) -> None:  # type: ignore[override]
        if preds.dim() == target.dim() + 1:
            preds = preds.argmax(1)
        super().update(self._masks(preds), self._masks(target))


class Segmentation(Task):
    """Options of ``Segmentation`` (keyword arguments; configs set them by name).

    Args:
        dice_weight: weight of the soft Dice term added to per-pixel cross-entropy (0 = cross-entropy only).
    """

    data_class = SegmentationData
    monitor = "val/dice_mean"

    def __init__(self, dice_weight: float = 0.0) -> None:
        if dice_weight < 0:
            raise ValueError(f"task.dice_weight must be >= 0, got {dice_weight}")
        self.dice_weight = dice_weight

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        """``output (B, K, H, W)`` logits, ``target (B, H, W)`` labels."""
        loss = F.cross_entropy(output, target)
        return loss + self.dice_weight * soft_dice_loss(output, target) if self.dice_weight else loss

    def metrics(self, data: Any) -> MetricCollection:
        """``dice_<region>`` per region, ``dice_mean`` (their mean; selects checkpoints) and ``miou`` (mean IoU
        over all classes, background included)."""
        regions = data.regions
        return MetricCollection(
            {
                **{f"dice_{name}": RegionDice([labels]) for name, labels in regions.items()},
                "dice_mean": RegionDice(list(regions.values())),
                "miou": MulticlassJaccardIndex(data.num_classes, average="macro"),
            }
        )
