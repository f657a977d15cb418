"""Per-epoch record of a run (metrics, step times), saved atomically every epoch and restored on resume."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import lightning as L

from hkt.io import write_atomic


class History(L.Callback):
    def __init__(self, path: Path) -> None:
        self.path = path
        self.epochs: list[dict[str, float]] = []
        self.step_times: list[float] = []
        self._t0 = 0.0

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self.step_times.append(time.perf_counter() - self._t0)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # validation ran before this hook, so the epoch's metrics are all in callback_metrics
        row = {"epoch": trainer.current_epoch}
        for k, v in trainer.callback_metrics.items():
            if k.startswith("val/") or k.endswith("_epoch") or k.startswith("gate/") or (k.startswith("train/") and k != "train/loss_step"):
                row[k.removesuffix("_epoch")] = float(v)
        self.epochs.append(row)
        if trainer.is_global_zero:
            write_atomic(self.path, json.dumps(self.summary(), indent=1))

    def summary(self) -> dict[str, Any]:
        steady = self.step_times[5:] or self.step_times
        return {"epochs": self.epochs, "median_step_s": statistics.median(steady) if steady else None}

    def state_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "step_times": self.step_times}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epochs, self.step_times = list(state["epochs"]), list(state["step_times"])
