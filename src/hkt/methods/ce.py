"""``ce``: plain training / fine-tuning of the child on the task loss alone (the control)."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from hkt.methods.base import Method


class CE(Method):
    """The child trained on the task loss alone; no parent.

    Args:
        child: the network trained (and deployed).
    """

    needs_parent = False

    def forward_train(self, x: Any, y: Any) -> tuple[Any, dict[str, Tensor]]:
        out = self.child(x)
        return out, {"task": self.task_loss(out, y)}
