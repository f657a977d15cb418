"""Training methods, one small module each, all with the ``Method`` contract."""

from __future__ import annotations

from typing import Any

from torch import nn

from hkt.methods.at import AT
from hkt.methods.base import Method, kd_loss
from hkt.methods.ce import CE
from hkt.methods.fitnet import FitNet
from hkt.methods.hkt import HKT
from hkt.methods.kd import KD

METHODS: dict[str, type[Method]] = {"ce": CE, "kd": KD, "fitnet": FitNet, "at": AT, "hkt": HKT}


INTERNAL = ("self", "child", "parent", "example_input", "task_loss", "distill_loss")  # set by the run, not by configs


def build_method(
    name: str, child: nn.Module, parent: nn.Module | None, example_input: Any, task: Any = None, **options: Any
) -> Method:
    """Build a method by name; ``options`` are its keyword arguments (validated against its signature).
    ``task`` (a ``hkt.tasks.Task``) supplies the task loss and, to methods with a KD term, the distillation loss."""
    import inspect

    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    cls = METHODS[name]
    params = inspect.signature(cls.__init__).parameters
    unknown = sorted(set(options) - set(params) - {"self"})
    if unknown:
        allowed = sorted(p for p in params if p not in INTERNAL)
        raise ValueError(f"method {name!r} has no option(s) {unknown}; its options are {allowed}")
    if task is not None:
        options["task_loss"] = task.loss
        if "distill_loss" in params:
            options["distill_loss"] = task.distill
    if name == "ce":
        return cls(child, **options)
    if parent is None:
        raise ValueError(f"method {name!r} needs a parent network; set parent.arch (and parent.weights)")
    if "example_input" in params:
        options["example_input"] = example_input
    return cls(child, parent, **options)


__all__ = ["AT", "CE", "FitNet", "HKT", "KD", "METHODS", "Method", "build_method", "kd_loss"]
