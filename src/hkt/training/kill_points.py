"""Where the crash tests stop a training run (``HKT_KILL_AT``, :func:`hkt.io.kill_point`): inside a training epoch,
during validation, at the start of an epoch (after the previous epoch's checkpoints), during testing. The points
around testing and the result files are in ``hkt.training.run`` and ``hkt.io.atomic``."""

from __future__ import annotations

from typing import Any

import lightning as L

from hkt.io import kill_point


class KillPoints(L.Callback):
    def on_train_batch_end(self, *args: Any) -> None:
        kill_point("train_batch")

    def on_validation_batch_end(self, *args: Any) -> None:
        kill_point("validation")

    def on_train_epoch_start(self, *args: Any) -> None:
        kill_point("epoch_start")

    def on_test_batch_end(self, *args: Any) -> None:
        kill_point("test")
