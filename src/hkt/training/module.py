"""The LightningModule: *what* a step computes for any ``Method``; Lightning's Trainer owns the *how*
(devices, DDP, precision, checkpoints, progress bars, logs)."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any, Literal

import lightning as L
import torch
from torch import Tensor, nn

from hkt.methods.base import Method
from hkt.tasks import Task
from hkt.training.schedule import Schedule, lr_factor

OPTIM_KEYS = ("optimizer", "lr", "momentum", "weight_decay", "nesterov", "schedule", "warmup", "min_lr", "milestones")


class NonFiniteLossError(FloatingPointError):
    """The training loss, or after a step a weight or buffer of the child, became NaN/inf; the run stops before any
    checkpoint holds it (``hkt.training.run`` adds what to do: resume from the last checkpoint, or start again)."""


class ParentInOptimizerError(RuntimeError):
    """A parent parameter would be trained; the parent must stay frozen."""


class MethodModule(L.LightningModule):
    """Trains ``method`` (SGD or AdamW, an lr schedule); validates and tests the child alone with the task's
    metrics (logged as ``val/<name>`` and ``test/<name>``, or ``test/<set>_<name>`` for named test sets).

    Every schedule steps per optimiser step (``hkt.training.schedule``), over
    ``trainer.estimated_stepping_batches`` steps.

    Args:
        optimizer: ``sgd`` (with ``momentum``, ``nesterov``) or ``adamw`` (RAFT's choice).
        schedule: ``cosine`` (to ``min_lr``), ``step`` (x0.1 at each of ``milestones``, fractions of training),
            ``onecycle`` (linear warm-up then linear decay, as RAFT trains) or ``constant``.
        warmup: fraction of training with a linear warm-up (cosine, onecycle: 5 % when 0).
        min_lr: the lr of the last step (cosine, onecycle).
        run: what the run is (method, architectures), stored in checkpoints so a mismatched one is named.
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
        schedule: Schedule = "cosine",
        optimizer: Literal["sgd", "adamw"] = "sgd",
        warmup: float = 0.0,
        min_lr: float = 0.0,
        milestones: Sequence[float] = (0.5, 0.75),
        run: dict[str, Any] | None = None,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        if not 0 <= warmup < 1:
            raise ValueError(f"optim.warmup is a fraction of training in [0, 1), got {warmup}")
        if lr <= 0 or min_lr < 0 or min_lr > lr:
            raise ValueError(f"optim.lr must be > 0 and 0 <= optim.min_lr <= optim.lr, got lr={lr}, min_lr={min_lr}")
        if any(not 0 < m < 1 for m in milestones):
            raise ValueError(f"optim.milestones are fractions of training in (0, 1), got {list(milestones)}")
        self.method, self.optimizer = method, optimizer
        self.lr, self.momentum, self.weight_decay, self.nesterov, self.schedule = lr, momentum, weight_decay, nesterov, schedule
        self.warmup, self.min_lr, self.milestones = warmup, min_lr, tuple(milestones)
        self.run_info = dict(run or {})
        self.channels_last = channels_last
        self._restored_optim: dict[str, Any] | None = None
        self._total_steps = 1
        metrics = task.metrics(data)
        self.val_metrics = metrics.clone(prefix="val/")
        # one collection per test loader: test/<metric>, or test/<set>_<metric> when there are named sets (flow)
        names = getattr(data, "test_names", None) or [""]
        self.test_metrics = nn.ModuleList([metrics.clone(prefix=f"test/{n}_" if n else "test/") for n in names])

    def forward(self, x: Tensor) -> Tensor:
        return self.method(x)

    def _input(self, x: Any) -> Any:
        if self.channels_last and isinstance(x, Tensor) and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        x = self._input(x)
        _, losses = self.method.forward_train(x, y)
        loss = torch.stack(list(losses.values())).sum()
        if not math.isfinite(loss.item()):
            parts = ", ".join(f"{k}={v.item():.4g}" for k, v in losses.items())
            raise NonFiniteLossError(
                f"non-finite training loss in epoch {self.current_epoch + 1} (step {self.global_step}): the loss ({parts})"
            )
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], on_step=False, on_epoch=True)
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, on_step=False, on_epoch=True)
        self.log_dict(self.method.log_values(), on_step=False, on_epoch=True)
        return loss

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self.method.on_train_step(self.global_step, self._total_steps, self.current_epoch)

    def on_train_start(self) -> None:
        self._apply_changed_optim()
        # what the finiteness guard watches, listed once: after the move to the device, updated in place by training
        named = [(n, t) for n, t in self.method.named_parameters() if not n.startswith("parent.")]
        named += [(n, t) for n, t in self.method.named_buffers() if not n.startswith("parent.") and t.is_floating_point()]
        self._watched = [(n, t.detach()) for n, t in named]

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """After the optimiser step: a weight or buffer (BatchNorm running statistics) that went non-finite with a
        finite loss would otherwise be saved as the "good" checkpoint."""
        named = self._watched
        # one fused pass: the norm of a tensor holding NaN or inf is not finite
        finite = torch.stack(torch._foreach_norm([t for _, t in named])).isfinite().all()
        if not bool(finite):
            bad = [n for n, t in named if not torch.isfinite(t).all()]
            what = "non-finite values in"
            if not bad:  # every value finite, but a norm overflowed: weights too large for their dtype
                bad = [n for n, t in named if not torch.isfinite(torch.linalg.vector_norm(t.float()))]
                what = "values too large for float32 (their norm overflows) in"
            raise NonFiniteLossError(
                f"non-finite weights after step {self.global_step} (epoch {self.current_epoch + 1}): {what} "
                f"{', '.join(bad[:3])}{' …' if len(bad) > 3 else ''}"
            )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["hkt"] = {"optim": self.optim_config(), "run": self.run_info}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._restored_optim = (checkpoint.get("hkt") or {}).get("optim")

    def optim_config(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in ((k, getattr(self, k)) for k in OPTIM_KEYS)}

    def _apply_changed_optim(self) -> None:
        """On resume, the restored optimiser and schedule carry the old settings; the config given now wins (that
        is how a diverged run is resumed with a lower lr)."""
        old, new = self._restored_optim, self.optim_config()
        if old is None or old == new:
            return
        changed = {k: (old.get(k), new[k]) for k in OPTIM_KEYS if old.get(k) != new[k]}
        opt = self.optimizers().optimizer if hasattr(self.optimizers(), "optimizer") else self.optimizers()
        sched = self.lr_schedulers()
        for group in opt.param_groups:
            group["initial_lr"] = self.lr
            group["weight_decay"] = self.weight_decay
            if self.optimizer == "sgd":
                group["momentum"], group["nesterov"] = self.momentum, self.nesterov
        if sched is not None:
            sched.base_lrs = [self.lr for _ in opt.param_groups]
            for group, factor in zip(opt.param_groups, sched.lr_lambdas):
                group["lr"] = self.lr * factor(sched.last_epoch)
        else:
            for group in opt.param_groups:
                group["lr"] = self.lr
        msg = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items())
        if self.trainer.is_global_zero:
            logging.getLogger("hkt").info(
                f"resuming with changed optimiser settings ({msg}); the restored optimiser and schedule now follow them"
            )

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        self.val_metrics.update(self.method(self._input(x)), y)
        self.log_dict(self.val_metrics, prog_bar=True, on_epoch=True)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        x, y = batch
        metrics = self.test_metrics[dataloader_idx]
        metrics.update(self.method(self._input(x)), y)
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
        steps = self._total_steps = int(self.trainer.estimated_stepping_batches)
        # the factor is read from the current settings on every call, so a resume with a new min_lr applies too
        factor = lr_factor(self.schedule, steps, self.warmup, self.min_lr / self.lr, self.milestones)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1}}
