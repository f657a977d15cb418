"""Extraction (E): read activations of named blocks with forward hooks, without touching the model."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from hkt.core.gene import Gene
from hkt.core.paths import module_at
from hkt.core.transfer import GeneShapeError

Hook = Callable[[nn.Module, Any, Any], Any]


@contextmanager
def hooks(model: nn.Module, hooks_by_path: dict[str, Hook], role: str = "model") -> Iterator[None]:
    """Register forward hooks by module path for the duration of a ``with`` block, then remove them.

    A hook that returns a value replaces the module's output (this is how Mixture injects).
    """
    handles: list[RemovableHandle] = []
    try:
        for path, hook in hooks_by_path.items():
            handles.append(module_at(model, path, role).register_forward_hook(hook))
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def extracting(model: nn.Module, paths: Sequence[str], role: str = "model") -> Iterator[dict[str, Tensor]]:
    """Collect the outputs of ``paths`` during forward passes inside the block: ``{path: tensor}``."""
    store: dict[str, Tensor] = {}

    def make(path: str) -> Hook:
        def hook(_m: nn.Module, _inp: Any, out: Any) -> None:
            store[path] = out

        return hook

    with hooks(model, {p: make(p) for p in paths}, role):
        yield store


def as_args(x: Any) -> tuple[Any, ...]:
    """A model input as positional arguments: a tuple/list is spread, anything else is one argument."""
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def trace_blocks(model: nn.Module, paths: Sequence[str], args: tuple[Any, ...], role: str) -> tuple[dict[str, Tensor], Counter[str]]:
    """Run ``model`` once; return ``{path: output of its first call}`` in the order the blocks fired, and how
    many times each block ran (a recurrent block, e.g. RAFT's update GRU, runs once per iteration).

    Raises ``GeneShapeError`` for a block that never runs or returns no single tensor.
    """
    store: dict[str, Tensor] = {}
    calls: Counter[str] = Counter()

    def make(path: str) -> Hook:
        def hook(_m: nn.Module, _inp: Any, out: Any) -> None:
            store.setdefault(path, out)
            calls[path] += 1

        return hook

    with hooks(model, {p: make(p) for p in paths}, role):
        model(*args)
    missing = [p for p in paths if p not in store]
    if missing:
        raise GeneShapeError(f"{role} block(s) {missing} never ran during a forward pass; choose blocks on the forward path")
    bad = [p for p in paths if not isinstance(store[p], Tensor)]
    if bad:
        raise GeneShapeError(f"{role} block(s) {bad} do not return a single tensor; pick a block that does")
    return store, calls


@dataclass
class DryRun:
    """Gene outputs (first call, firing order) and call counts of both networks on one example batch."""

    parent: dict[str, Tensor]
    child: dict[str, Tensor]
    parent_calls: Counter[str]
    child_calls: Counter[str]


def dry_run(parent: nn.Module, child: nn.Module, genes: Sequence[Gene], example_input: Any) -> DryRun:
    """One eval-mode, no-grad pass of both networks on ``example_input``, used to size adapters."""
    args = as_args(example_input)
    was_training = child.training
    parent.eval()
    child.eval()
    try:
        with torch.no_grad():
            p, p_calls = trace_blocks(parent, [g.parent for g in genes], args, "parent")
            c, c_calls = trace_blocks(child, [g.child for g in genes], args, "child")
            return DryRun(p, c, p_calls, c_calls)
    finally:
        child.train(was_training)
