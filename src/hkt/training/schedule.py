"""Learning-rate schedules as a multiplier of the base lr per **optimiser step**, so that even a one-epoch
run anneals, and a resumed run (whose scheduler restores its step count) follows the same curve."""

from __future__ import annotations

import math
import typing
from collections.abc import Callable, Sequence
from typing import Literal

Schedule = Literal["cosine", "step", "onecycle", "constant"]
SCHEDULES: tuple[str, ...] = typing.get_args(Schedule)


def lr_factor(
    schedule: str,
    total_steps: int,
    warmup: float = 0.0,
    min_factor: float = 0.0,
    milestones: Sequence[float] = (0.5, 0.75),
    gamma: float = 0.1,
) -> Callable[[int], float]:
    """``f(step) -> lr / base lr`` for optimiser steps ``0 … total_steps - 1``.

    Args:
        schedule: ``cosine`` (optional linear warm-up, then half a cosine from 1 to ``min_factor``, reached at the
            last step), ``step`` (× ``gamma`` at each milestone, milestones given as fractions of training),
            ``onecycle`` (RAFT's recipe: linear warm-up from 1/25 over ``warmup`` (default 5 %), then linear
            decay to ``min_factor``) or ``constant``.
        warmup: fraction of the steps spent warming up linearly (from 1 / (warm-up steps) to 1).
        min_factor: final lr / base lr (``optim.min_lr / optim.lr``).
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"optim.schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    total = max(1, int(total_steps))
    if schedule == "onecycle" and not warmup:
        warmup = 0.05
    n_warm = int(round(warmup * total))
    last = max(1, total - 1 - n_warm)  # steps after warm-up, counting to the last step

    def warm(step: int) -> float | None:
        if step < n_warm:
            start = 1 / 25 if schedule == "onecycle" else 0.0
            return start + (1 - start) * (step + 1) / n_warm
        return None

    def factor(step: int) -> float:
        w = warm(step)
        if w is not None:
            return w
        t = min(1.0, (step - n_warm) / last)  # 0 at the first step after warm-up, 1 at the last step
        if schedule == "cosine":
            return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * t))
        if schedule == "onecycle":
            return 1 + (min_factor - 1) * t
        if schedule == "step":
            return gamma ** sum(step >= m * total for m in milestones)
        return 1.0

    return factor
