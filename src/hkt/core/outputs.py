"""Outputs that are not one tensor: a Hugging Face ``ModelOutput``, a dict, a tuple (HF layers, torchvision dicts).

Two needs, one vocabulary. A **gene** reads one element of its module's output (default: the first tensor, e.g.
``hidden_states``) and writes its mixed tensor back into the same structure, so the rest of the model runs
unchanged. A **model**'s logits are one element of its output (``.logits`` for Hugging Face classifiers, or a
configured key / index): ``read_logits`` installs a forward hook on the model that returns that element, so every
method and metric sees a tensor, and ``export_child`` removes it again (the deployed model is the user's own).

An element is ``None`` (the first tensor), an int (a position in a tuple / list) or a str (a key or attribute).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils import _pytree as pytree

from hkt.core.kinds import GeneShapeError

Element = int | str | None


def describe(out: Any) -> str:
    """``ImageClassifierOutput with keys [logits]``, ``tuple of 3``, ``Tensor (2, 10)``: for error messages."""
    if isinstance(out, Tensor):
        return f"Tensor {tuple(out.shape)}"
    if isinstance(out, Mapping):
        return f"{type(out).__name__} with keys [{', '.join(map(str, out.keys()))}]"
    if isinstance(out, (tuple, list)):
        return f"{type(out).__name__} of {len(out)}"
    return type(out).__name__


def _first_tensor_index(out: Any) -> int | None:
    leaves = pytree.tree_leaves(out)
    return next((i for i, t in enumerate(leaves) if isinstance(t, Tensor)), None)


def read(out: Any, element: Element, where: str = "module") -> Tensor:
    """The tensor ``element`` of ``out``; a ``GeneShapeError`` naming the output's structure when there is none."""
    if isinstance(out, Tensor) and element is None:
        return out
    found: Any = None
    if element is None:
        found = next((t for t in pytree.tree_leaves(out) if isinstance(t, Tensor)), None)
    elif isinstance(element, int) and isinstance(out, (tuple, list)) and -len(out) <= element < len(out):
        found = out[element]
    elif isinstance(element, str) and isinstance(out, Mapping) and element in out:
        found = out[element]
    elif isinstance(element, str) and not isinstance(out, Mapping):
        found = getattr(out, element, None)
    if not isinstance(found, Tensor):
        raise GeneShapeError(
            f"{where} returns {describe(out)}, which has no tensor at element {element!r}; "
            + ("choose a key it has" if isinstance(out, Mapping) else "choose an index or key it has")
        )
    return found


def write(out: Any, element: Element, value: Tensor) -> Any:
    """``out`` with its tensor ``element`` replaced by ``value`` (same structure, other elements untouched)."""
    if isinstance(out, Tensor) and element is None:
        return value
    if element is None:
        leaves, spec = pytree.tree_flatten(out)
        leaves[_first_tensor_index(out)] = value
        return pytree.tree_unflatten(leaves, spec)
    if isinstance(out, (tuple, list)):
        items = list(out)
        items[element] = value
        return type(out)(items) if type(out) in (tuple, list) else type(out)(*items)
    if isinstance(out, Mapping):
        new = copy.copy(out)  # a ModelOutput stays a ModelOutput (its __setitem__ also sets the attribute)
        new[element] = value
        return new
    new = copy.copy(out)  # an output object with attributes: the copy gets the value, the model's own is untouched
    setattr(new, element, value)
    return new


class LogitsHook:
    """A forward hook that returns one element of a model's output (a model's logits)."""

    def __init__(self, element: Element, role: str) -> None:
        self.element, self.role = element, role

    def __call__(self, model: nn.Module, _inp: Any, out: Any) -> Tensor:
        if isinstance(out, Tensor) and self.element in (None, "logits"):
            return out
        try:
            return read(out, self.element, f"{self.role} ({type(model).__name__})")
        except GeneShapeError as e:
            raise GeneShapeError(
                f"{e}. Its logits are needed by the task loss and by logit methods: set {self.role}.output to the element "
                "holding them (e.g. logits), or use a model with a classification head (e.g. *ForImageClassification)"
            ) from e


def is_structured(model: nn.Module) -> bool:
    """A Hugging Face model: its forward returns a ``ModelOutput``, not a tensor."""
    return type(model).__module__.startswith("transformers.") and hasattr(model, "config")


def read_logits(model: nn.Module, element: Element = None, role: str = "child") -> nn.Module:
    """Make ``model(x)`` return the tensor ``element`` of its output (default for Hugging Face models: ``logits``).

    No-op for a model that returns tensors and has no ``element`` configured, and, without ``element``, for a model
    that already reads one; with ``element``, replaces an earlier choice. Returns ``model``."""
    already = any(isinstance(h, LogitsHook) for h in model._forward_hooks.values())
    if element is None and (already or not is_structured(model)):
        return model
    drop_logits_hook(model)
    model.register_forward_hook(LogitsHook("logits" if element is None else element, role))
    return model


def drop_logits_hook(model: nn.Module) -> nn.Module:
    """Remove ``read_logits``'s hook (the exported child returns its own output again). Returns ``model``."""
    for key, hook in list(model._forward_hooks.items()):
        if isinstance(hook, LogitsHook):
            del model._forward_hooks[key]
    return model


def check_logits(model: nn.Module, example_input: Any, role: str) -> None:
    """Fail now, not in the first step, when a model whose logits are read from a structured output has none: one
    eval-mode, no-grad forward on ``example_input``, only for such models (``read_logits``)."""
    if example_input is None or not any(isinstance(h, LogitsHook) for h in model._forward_hooks.values()):
        return
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(*(example_input if isinstance(example_input, (tuple, list)) else (example_input,)))
    finally:
        model.train(was_training)
