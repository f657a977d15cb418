"""Extraction (E): read activations of named blocks with forward hooks, without touching the model."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import contextmanager
from typing import Any, Iterator

from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from hkt.core.paths import module_at

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
