"""Image classification: cross-entropy, top-1 accuracy."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from hkt.data.datamodule import ImageClassificationData, SplitData
from hkt.data.stream import FolderData, HFData
from hkt.tasks.base import Task


class Classification(Task):
    data_class = ImageClassificationData
    monitor = "val/acc"
    streams = {"image_folder": FolderData, "hf": HFData}  # decoded one at a time; the others are held in memory

    @classmethod
    def data_for(cls, options: dict[str, Any]) -> type[SplitData]:
        return cls.streams.get(options.get("name"), ImageClassificationData)

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        """``output (B, K)`` logits, ``target (B,)`` class indices or ``(B, K)`` class probabilities (MixUp, CutMix,
        label smoothing: ``hkt.data.recipe.train_batch``)."""
        return F.cross_entropy(output, target)

    def metrics(self, data: Any) -> MetricCollection:
        return MetricCollection({"acc": MulticlassAccuracy(data.num_classes, average="micro")})
