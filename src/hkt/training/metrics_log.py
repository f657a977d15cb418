"""``logs/metrics.csv``, crash-consistent: Lightning's CSV logger, with every row kept in memory and the whole file
written atomically on each save (Lightning appends to it, and rewrites it in place when a new column appears, so a
kill can leave half a row or half a file), and the rows carried in the ``last`` checkpoint by ``History``, so that
a resumed run holds exactly the rows an uninterrupted run would."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.loggers import CSVLogger
from torch import Tensor

from hkt.io import write_atomic

Row = dict[str, Any]


class MetricsCSV(CSVLogger):
    """``out/logs/metrics.csv``: one row per ``log_metrics`` call (``step``, ``epoch`` and the metrics), header sorted
    as Lightning sorts it. ``rows`` is what a checkpoint stores and a resume restores."""

    def __init__(self, out: Path) -> None:
        super().__init__(str(out), name="logs", version="")
        self.path = Path(out) / "logs" / "metrics.csv"
        self.rows: list[Row] = []

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, Tensor | float], step: int | None = None) -> None:
        self.rows.append(as_row(metrics, len(self.rows) if step is None else step))

    @rank_zero_only
    def save(self) -> None:
        if not self.rows:
            return
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=sorted({k for r in self.rows for k in r}), restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        write_atomic(self.path, buf.getvalue())

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self.save()


def as_row(metrics: dict[str, Tensor | float], step: int) -> Row:
    """A row as Lightning's CSV writer records it: tensors as Python numbers, then ``step``."""
    return {**{k: v.item() if isinstance(v, Tensor) else v for k, v in metrics.items()}, "step": step}
