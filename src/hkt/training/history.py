"""Per-epoch record of a run (metrics, step times), saved atomically every epoch and restored on resume."""

from __future__ import annotations

import json
import logging
import statistics
import time
from pathlib import Path
from typing import Any

import lightning as L

from hkt.io import write_atomic
from hkt.training.metrics_log import MetricsCSV, as_row


def epoch_line(row: dict[str, float], epochs: int, seconds: float) -> str:
    """``epoch 2/4: train loss 0.3214 (child 0.12, inherit 0.11, parent 0.09) | val acc 0.8832 | gate avgpool 0.031 | 95 s``"""
    terms = {k[6:]: v for k, v in row.items() if k.startswith("train/") and k not in ("train/loss", "train/lr")}
    parts = [
        f"train loss {row.get('train/loss', float('nan')):.4g}"
        + (f" ({', '.join(f'{k} {v:.3g}' for k, v in terms.items())})" if len(terms) > 1 else "")
    ]
    parts += [f"{k.replace('/', ' ')} {v:.4g}" for k, v in row.items() if k.startswith("val/")]
    parts += [f"{k.replace('/', ' ')} {v:.3g}" for k, v in row.items() if k.startswith(("gate/", "warmup/", "lam/"))]
    return f"epoch {int(row['epoch']) + 1}/{epochs}: " + " | ".join(parts) + f" | {seconds:.0f} s"


class History(L.Callback):
    """Per-epoch metrics and step times (``history.json`` and every checkpoint), and in every checkpoint the rows of
    the metrics CSV (``csv``).

    Checkpoints are written in ``on_train_epoch_end``, before Lightning logs the epoch's training means (it logs them
    after that hook), so each checkpoint also carries that pending row: a run resumed from it logs exactly the rows
    of an uninterrupted one."""

    def __init__(self, path: Path, csv: MetricsCSV) -> None:
        self.path = path
        self.csv = csv
        self.pending_row: dict[str, Any] | None = None
        self.epochs: list[dict[str, float]] = []
        self.step_times: list[float] = []
        self._t0 = self._epoch_t0 = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
        self._epoch_t0 = time.perf_counter()

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
        # what Lightning logs once the epoch-end hooks are done (LoggerConnector.update_train_epoch_metrics): the
        # epoch's on_epoch metrics, at the last stepped batch. Lightning offers no public handle on it.
        pending = dict(trainer._logger_connector.metrics["log"])
        pending.setdefault("epoch", trainer.current_epoch)
        self.pending_row = as_row(pending, trainer.fit_loop.epoch_loop._batches_that_stepped - 1) if len(pending) > 1 else None
        if trainer.is_global_zero:
            write_atomic(self.path, json.dumps(self.summary(), indent=1))
            logging.getLogger("hkt").info(epoch_line(row, trainer.max_epochs, time.perf_counter() - self._epoch_t0))

    def summary(self) -> dict[str, Any]:
        steady = self.step_times[5:] or self.step_times
        return {"epochs": self.epochs, "median_step_s": statistics.median(steady) if steady else None}

    def state_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "step_times": self.step_times, "log_rows": self.csv.rows + [r for r in [self.pending_row] if r]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epochs, self.step_times = list(state["epochs"]), list(state["step_times"])
        if not self.csv.rows:  # a resume; testing the best checkpoint restores callbacks too, and must not drop rows
            self.csv.rows = list(state.get("log_rows", []))
