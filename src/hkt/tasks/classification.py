"""Image classification: cross-entropy, top-1 accuracy."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from hkt.data.datamodule import ImageClassificationData
from hkt.tasks.base import Task


class Classification(Task):
    data_class = ImageClassificationData
    monitor = "val/acc"

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        """``output (B, K)`` logits, ``target (B,)`` class indices."""
        return F.cross_entropy(output, target)

    def metrics(self, data: Any) -> MetricCollection:
        return MetricCollection({"acc": MulticlassAccuracy(data.num_classes, average="micro")})
