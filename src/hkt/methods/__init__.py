"""Training methods, one small module each, all with the ``Method`` contract."""

from __future__ import annotations

from typing import Any

from torch import nn

from hkt.core.outputs import check_logits
from hkt.losses import kd_loss
from hkt.methods.at import AT
from hkt.methods.base import Method
from hkt.methods.ce import CE
from hkt.methods.deit import DeiT
from hkt.methods.dist import DIST
from hkt.methods.dkd import DKD
from hkt.methods.fitnet import FitNet
from hkt.methods.hkt import HKT
from hkt.methods.kd import KD
from hkt.methods.reviewkd import ReviewKD

METHODS: dict[str, type[Method]] = {
    "ce": CE,
    "kd": KD,
    "dkd": DKD,
    "dist": DIST,
    "deit": DeiT,
    "fitnet": FitNet,
    "at": AT,
    "reviewkd": ReviewKD,
    "hkt": HKT,
}
INTERNAL = ("self", "child", "parent", "example_input", "task_loss", "distill_loss")  # set by the run, not by configs


def build_method(name: str, child: nn.Module, parent: nn.Module | None, example_input: Any, task: Any = None, **options: Any) -> Method:
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
    if task is not None and not getattr(task, "logits", True) and (cls.needs_logits or options.get("logit_standardize")):
        applies = [m for m, c in METHODS.items() if not c.needs_logits]
        what = f"method {name!r}" if cls.needs_logits else "logit_standardize"
        raise ValueError(
            f"{what} works on class logits, and the {type(task).__name__.lower()} task regresses values; methods that apply "
            f"here: {', '.join(applies)} (without logit_standardize)"
        )
    if task is not None:
        options["task_loss"] = task.loss
        if "distill_loss" in params:
            options["distill_loss"] = task.distill
    if not cls.needs_parent:
        method = cls(child, **options)
    elif parent is None:
        raise ValueError(f"method {name!r} needs a parent network; set parent.arch (and parent.weights)")
    else:
        if "example_input" in params:
            options["example_input"] = example_input
        method = cls(child, parent, **options)
    for role in ("child", "parent"):  # methods with a dry run have already run both networks
        if getattr(method, role) is not None and "example_input" not in params:
            check_logits(getattr(method, role), example_input, role)
    return method


__all__ = ["AT", "CE", "DIST", "DeiT", "DKD", "FitNet", "HKT", "KD", "METHODS", "Method", "ReviewKD", "build_method", "kd_loss"]
