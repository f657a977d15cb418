"""What ``hkt fit / test / export / compare`` print: hkt's own lines, not Lightning's banners.

Lightning announces hardware, tips about its cloud products and how it counts batches, and PyTorch warns about
its own internals; none of it tells an hkt user anything. These specific messages are dropped, one pattern each;
every other warning and log line still prints. ``--verbose`` shows them all again.
"""

from __future__ import annotations

import logging
import re
import sys
import warnings

# rank_zero_info lines of Lightning (logger "lightning.pytorch.utilities.rank_zero" and fabric's twin)
BANNERS = (
    r"^GPU available:",
    r"^TPU available:",
    r"^HPU available:",
    r"^💡 Tip:",
    r"^Loading `train_dataloader` to estimate",
    r"^`Trainer\.fit` stopped:",
    r"^Restoring states from the checkpoint path",
    r"^Loaded model weights from the checkpoint",
    r"^Seed set to",
)
# warnings that are known to be harmless here (the message, as a regex on its start)
HARMLESS = (
    r".*isinstance\(treespec, LeafSpec\)` is deprecated",  # Lightning's own use of torch's _pytree
    r"The number of training batches \(\d+\) is smaller than the logging interval",  # short runs log per epoch anyway
    r"The '\w+_dataloader' does not have many workers",  # batches are cropped and flipped on the device (input_pipeline)
    r"Checkpoint directory .* exists and is not empty",  # --resume writes into its own run directory
    r"Experiment logs directory .* exists and is not empty",
    r"Found \d+ module\(s\) in eval mode at the start of training",  # the frozen parent stays in eval mode by design
)
LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


class _DropBanners(logging.Filter):
    pattern = re.compile("|".join(BANNERS))

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.search(record.getMessage())


def quiet() -> None:
    """Drop Lightning's banners and the known-harmless warnings (idempotent)."""
    for name in LOGGERS:
        log = logging.getLogger(name)
        if not any(isinstance(f, _DropBanners) for f in log.filters):
            log.addFilter(_DropBanners())
    for message in HARMLESS:
        warnings.filterwarnings("ignore", message=message)


class _Stderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (a test's capture, a redirected shell), not the one at setup."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def show_hkt_log() -> None:
    """hkt's own INFO lines (start, one per gene, one per epoch, the end summary) on stderr, once."""
    log = logging.getLogger("hkt")
    if not log.handlers:
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("[hkt] %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
