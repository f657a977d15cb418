"""The LightningModule: *what* a step computes for any ``Method``; Lightning's Trainer owns the *how*
(devices, DDP, precision, checkpoints, progress bars, logs)."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from hkt.methods.base import Method
from hkt.tasks import Task


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN/inf; the run stops and its last good checkpoint is kept."""


class ParentInOptimizerError(RuntimeError):
    """A parent parameter would be trained; the parent must stay frozen."""


class MethodModule(L.LightningModule):
    """Trains ``method`` (SGD or AdamW, an lr schedule); validates and tests the child alone with the task's
    metrics (logged as ``val/<name>`` and ``test/<name>``, or ``test/<set>_<name>`` for named test sets).

    Args:
        optimizer: ``sgd`` (with ``momentum``, ``nesterov``) or ``adamw`` (RAFT's choice).
        schedule: ``cosine`` (to 0 over ``max_epochs``), ``step`` (x0.1 at 50% and 75%), ``constant`` (all per
            epoch) or ``onecycle`` (per step: 5% linear warm-up then linear decay, as RAFT trains).
    """

    def __init__(
        self,
        method: Method,
        task: Task,
        data: Any,
        lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        nesterov: bool = False,
        schedule: str = "cosine",
        optimizer: str = "sgd",
    ) -> None:
        super().__init__()
        if schedule not in ("cosine", "step", "constant", "onecycle"):
            raise ValueError(f"optim.schedule must be cosine, step, constant or onecycle, got {schedule!r}")
        if optimizer not in ("sgd", "adamw"):
            raise ValueError(f"optim.optimizer must be sgd or adamw, got {optimizer!r}")
        self.method, self.optimizer = method, optimizer
        self.lr, self.momentum, self.weight_decay, self.nesterov, self.schedule = lr, momentum, weight_decay, nesterov, schedule
        metrics = task.metrics(data)
        self.val_metrics = metrics.clone(prefix="val/")
        # one collection per test loader: test/<metric>, or test/<set>_<metric> when there are named sets (flow)
        names = getattr(data, "test_names", None) or [""]
        self.test_metrics = nn.ModuleList([metrics.clone(prefix=f"test/{n}_" if n else "test/") for n in names])

    def forward(self, x: Tensor) -> Tensor:
        return self.method(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        _, losses = self.method.forward_train(x, y)
        loss = torch.stack(list(losses.values())).sum()
        if not math.isfinite(loss.item()):
            parts = ", ".join(f"{k}={v.item():.4g}" for k, v in losses.items())
            raise NonFiniteLossError(
                f"non-finite training loss at epoch {self.current_epoch}, step {self.global_step} ({parts}). "
                "The last good checkpoint is kept; lower the learning rate or use 32-bit precision, then resume."
            )
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True)
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, on_step=False, on_epoch=True)
        self.log_dict(self.method.log_values(), on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        self.val_metrics.update(self.method(x), y)
        self.log_dict(self.val_metrics, prog_bar=True, on_epoch=True)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        x, y = batch
        metrics = self.test_metrics[dataloader_idx]
        metrics.update(self.method(x), y)
        self.log_dict(metrics, on_epoch=True, add_dataloader_idx=False)

    def configure_optimizers(self) -> Any:
        params = self.method.learnable_parameters()
        if self.method.parent is not None:
            trained = {id(p) for p in params}
            leaked = [n for n, p in self.method.parent.named_parameters() if id(p) in trained or p.requires_grad]
            if leaked:
                raise ParentInOptimizerError(
                    f"parent parameters would be trained: {leaked[:5]}{' …' if len(leaked) > 5 else ''}. The parent is frozen "
                    "in HKT; do not call parent.requires_grad_(True) or return parent parameters from learnable_parameters()."
                )
        if self.optimizer == "adamw":
            opt: torch.optim.Optimizer = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        else:
            opt = torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay, nesterov=self.nesterov)
        epochs = max(1, self.trainer.max_epochs or 1)
        if self.schedule == "onecycle":
            steps = int(self.trainer.estimated_stepping_batches)
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, self.lr, total_steps=steps + 1, pct_start=0.05, anneal_strategy="linear", cycle_momentum=False)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
        if self.schedule == "cosine":
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
        elif self.schedule == "step":
            sched = torch.optim.lr_scheduler.MultiStepLR(opt, [epochs // 2, (3 * epochs) // 4], 0.1)
        else:
            return opt
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
