"""Run two paths of one network as one batch: ``[native; inherited]`` along the batch dimension.

After the first gene the child carries its native features and its inherited mix side by side, so the
blocks before that gene run once. BatchNorm is the one layer for which batching the paths would change
the maths (statistics would pool both paths, and the running statistics of the deployed child would
drift towards the inherited path), so while paths are stacked each BatchNorm normalises the native half
as usual and the inherited half with its own batch statistics, without touching the running estimates.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils import _pytree as pytree


def split_paths(output: Any, batch: int) -> tuple[Any, Any]:
    """Split every tensor with ``2 * batch`` rows in a (nested) output into its two halves."""

    def half(t: Any, first: bool) -> Any:
        if isinstance(t, Tensor) and t.dim() > 0 and t.shape[0] == 2 * batch:
            return t[:batch] if first else t[batch:]
        return t

    return pytree.tree_map(lambda t: half(t, True), output), pytree.tree_map(lambda t: half(t, False), output)


def _always() -> bool:
    return True


@contextmanager
def per_path_batchnorm(model: nn.Module, batch: int, armed: Callable[[], bool] = _always) -> Iterator[None]:
    """While active and ``armed()``, BatchNorm layers fed ``2 * batch`` rows normalise each half separately.

    ``armed`` turns true at the first gene: before it, ``2 * batch`` rows are the model's own (two views of a
    Siamese encoder, both frames of a flow network) and are normalised together, as in a plain forward."""
    pending: dict[nn.Module, Tensor] = {}

    def before(m: _BatchNorm, args: tuple[Tensor, ...]) -> Any:
        x = args[0]
        if x.shape[0] != 2 * batch or not armed():
            return None
        pending[m] = x[batch:]
        return (x[:batch],)

    def after(m: _BatchNorm, _args: Any, out: Tensor) -> Any:
        x = pending.pop(m, None)
        if x is None:
            return None
        # the inherited half through the layer's own forward, so a BatchNorm with a fused activation (timm's
        # BatchNormAct2d in MobileNet and EfficientNet) applies it too; its running estimates and step count go to
        # copies (torch.func.functional_call), so the user's layer keeps the native path's statistics only
        copies = {name: b.clone() for name, b in m.named_buffers(recurse=False)}
        return torch.cat([out, torch.func.functional_call(m, copies, (x,))])

    handles = []
    try:
        for m in model.modules():
            if isinstance(m, _BatchNorm):
                handles.append(m.register_forward_pre_hook(before))
                handles.append(m.register_forward_hook(after))
        yield
    finally:
        for h in handles:
            h.remove()
        pending.clear()


@contextmanager
def shared_skips(model: nn.Module, batch: int, armed: Callable[[], bool] = _always) -> Iterator[None]:
    """While active and ``armed()`` (from the first gene on), a module called with both stacked (``2 * batch`` rows)
    and single (``batch`` rows) tensors gets the single ones repeated: a skip connection from before the first gene
    (a U-Net encoder feature, the ``low`` input of an LRASPP head) is the same on both paths, so both read it. Works
    at module boundaries, for positional and keyword inputs, nested in tuples, lists and dicts."""

    def rows(t: Any) -> int | None:
        return t.shape[0] if isinstance(t, Tensor) and t.dim() > 0 else None

    def before(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if not armed():
            return None
        sizes = {rows(t) for t in pytree.tree_leaves((args, kwargs))}
        if batch not in sizes or 2 * batch not in sizes:
            return None
        return pytree.tree_map(lambda t: torch.cat([t, t]) if rows(t) == batch else t, (args, kwargs))

    handles = [m.register_forward_pre_hook(before, with_kwargs=True) for m in model.modules()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def frozen_running_stats(model: nn.Module) -> Iterator[None]:
    """While active, BatchNorm layers in training mode normalise with batch statistics but leave their running
    estimates untouched (momentum 0), so a second, inherited pass of the child does not move them."""
    saved = [
        (m, m.momentum, m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None)
        for m in model.modules()
        if isinstance(m, _BatchNorm) and m.track_running_stats
    ]
    try:
        for m, _, _ in saved:
            m.momentum = 0.0
        yield
    finally:
        for m, momentum, tracked in saved:
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)
