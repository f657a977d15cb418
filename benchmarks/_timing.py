"""Shared by the benchmark scripts: peak memory and the median time of repeated steps."""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable
from typing import Any


def rss_mb() -> float:
    """Peak resident set size of this process so far, MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def median_step(step: Callable[[], object], steps: int, warmup: int) -> float:
    """Run ``step`` ``warmup + steps`` times; the median wall time of the last ``steps`` runs, seconds."""
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def training_step(method: Any, opt: Any, x: Any, y: Any) -> None:
    """One full step of an hkt method: forward, summed losses, backward, optimiser step."""
    _, losses = method.forward_train(x, y)
    opt.zero_grad(set_to_none=True)
    sum(losses.values()).backward()
    opt.step()
