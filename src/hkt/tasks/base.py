"""The task contract."""

from __future__ import annotations

from typing import Any, ClassVar

import lightning as L
from torch import Tensor, nn
from torchmetrics import MetricCollection

from hkt.losses import kd_loss
from hkt.models import build_model


class Task:
    """``data_class`` builds the data module from the config's ``data`` section; ``monitor`` (a key of
    ``metrics`` under ``val/``) selects the best checkpoint, higher is better."""

    data_class: ClassVar[type[L.LightningDataModule]]
    monitor: ClassVar[str]
    mode: ClassVar[str] = "max"  # "min" when lower is better (e.g. end-point error)
    logits: ClassVar[bool] = True  # outputs are class logits (logit methods: dkd, dist, logit standardisation)
    net_keys: ClassVar[frozenset[str]] = frozenset({"arch", "weights", "width", "options", "output"})  # parent / child keys

    @classmethod
    def data_for(cls, options: dict[str, Any]) -> type[L.LightningDataModule]:
        """The data module class that reads the config's ``data`` section (by its ``name`` where a task has several)."""
        return cls.data_class

    def __init__(self) -> None:  # the task's options (config section ``task``) are its keyword arguments
        pass

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        """The task loss, a scalar."""
        raise NotImplementedError

    def distill(self, student: Any, teacher: Any, temperature: float = 4.0) -> Tensor:
        """The KD term (``kd`` and ``hkt`` with ``kd_weight``): Hinton KD on logits, per sample or per pixel."""
        return kd_loss(student, teacher, temperature)

    def metrics(self, data: Any) -> MetricCollection:
        """Fresh metrics (un-prefixed names) for a set-up data module."""
        raise NotImplementedError

    def build_net(self, net: dict[str, Any], data: Any) -> nn.Module:
        """Parent or child from a config section (``arch``, ``width``, ``weights``, ``options``: the architecture's own
        keyword arguments for ``timm:`` / ``hf:`` models) sized for ``data``. ``output`` (which element of a model
        output that is no tensor holds the logits) is applied by the run, not here."""
        return build_model(
            net["arch"], data.num_classes, data.in_channels, net.get("width", 16), net.get("weights"), options=net.get("options")
        )
