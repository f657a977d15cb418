"""Tasks: what a run predicts and how it is scored. A task names its data module, its task loss (used inside
every method's objective), its torchmetrics and the validation metric that selects the checkpoint; methods,
the training loop and ``hkt compare`` stay task-agnostic."""

from __future__ import annotations

from typing import Any

from hkt.tasks.base import Task
from hkt.tasks.classification import Classification
from hkt.tasks.flow import Flow
from hkt.tasks.segmentation import Segmentation

TASKS: dict[str, type[Task]] = {"classification": Classification, "segmentation": Segmentation, "flow": Flow}


def build_task(name: str, **options: Any) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    return TASKS[name](**options)


__all__ = ["TASKS", "Classification", "Flow", "Segmentation", "Task", "build_task"]
