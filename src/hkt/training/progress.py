"""The progress bar of a long run: Lightning's, counting epochs as ``hkt``'s own lines do (``epoch 4/4``, not
Lightning's 0-based ``Epoch 3``), with the images per second and the share of each step spent waiting for the data
loader, so a user sees when decoding, not the network, sets the pace (then raise ``data.num_workers``)."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import convert_inf


class EpochBar(TQDMProgressBar):
    """``TQDMProgressBar`` with 1-based epochs of ``max_epochs``, ``img/s`` and ``data`` (the loader's share of the
    epoch's wall time so far) beside Lightning's metrics."""

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
        # Lightning's own start, with the description set before the first render
        if self._leave:
            self.train_progress_bar = self.init_train_tqdm()
        of = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        self.train_progress_bar.set_description(f"epoch {trainer.current_epoch + 1}{of}", refresh=False)
        self.train_progress_bar.reset(convert_inf(self.total_train_batches))
        self.train_progress_bar.initial = 0
        self._last, self._started, self._waiting, self._images = time.perf_counter(), time.perf_counter(), 0.0, 0

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        self._waiting += time.perf_counter() - self._last  # since the last step ended: the loader's time

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._last = time.perf_counter()
        self._images += len(batch[1])
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        elapsed = getattr(self, "_last", 0.0) - getattr(self, "_started", 0.0)
        if trainer.training and elapsed > 0 and self._images:
            metrics["img/s"] = f"{self._images / elapsed:.0f}"
            metrics["data"] = f"{100 * self._waiting / elapsed:.0f}%"
        return metrics
