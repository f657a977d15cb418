"""The task contract."""

from __future__ import annotations

from typing import Any, ClassVar

import lightning as L
from torch import Tensor, nn
from torchmetrics import MetricCollection

from hkt.models import build_model


class Task:
    """``data_class`` builds the data module from the config's ``data`` section; ``monitor`` (a key of
    ``metrics`` under ``val/``) selects the best checkpoint, higher is better."""

    data_class: ClassVar[type[L.LightningDataModule]]
    monitor: ClassVar[str]

    def __init__(self) -> None:  # the task's options (config section ``task``) are its keyword arguments
        pass

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        """The task loss, a scalar."""
        raise NotImplementedError

    def metrics(self, data: Any) -> MetricCollection:
        """Fresh metrics (un-prefixed names) for a set-up data module."""
        raise NotImplementedError

    def build_net(self, net: dict[str, Any], data: Any) -> nn.Module:
        """Parent or child from a config section (``arch``, ``width``, ``weights``) sized for ``data``."""
        return build_model(net["arch"], data.num_classes, data.in_channels, net.get("width", 16), net.get("weights"))
