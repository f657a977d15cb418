"""Two paths through one network in one forward: the native path and the inherited one, as a ``vmap`` dimension.

The child alone and the child with the inherited mixes differ only from the first gene on. ``torch.func.vmap`` over a
*path* dimension of size 2 runs both as one forward: a tensor that does not depend on the path (everything before the
first gene, a skip connection from there, the parent's features) is computed once and broadcast, and everything
downstream of a gene carries both paths. A gene forks the paths with ``torch.where(path, inherited, native)``, so
nothing has to recognise a path by a tensor's row count, and a model whose own batch holds two views (a Siamese
encoder, both frames of a flow network) runs as in a plain forward.

BatchNorm is the one layer whose batching across paths would change the maths of a plain forward: it would update its
running estimates once per path (vmap refuses that). So every BatchNorm that runs after the first gene gets one copy of
its running estimates and step count per path (``torch.func.functional_call``); afterwards the native path's copies
are written back, which leaves the user's layers exactly as a plain forward of the child alone would.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils import _pytree as pytree

NATIVE, INHERITED = 0, 1
_TENSOR = object()  # marks where a tensor leaf goes back when an output is rebuilt after vmap

Forks = Callable[[Tensor], AbstractContextManager[dict[str, Any]]]


def fork(path: Tensor, native: Tensor, inherited: Tensor) -> Tensor:
    """``native`` on the native path and ``inherited`` on the inherited one (``path``: this path's 0-d bool, as
    ``two_paths`` hands it to ``forks``); either may already carry both paths."""
    return torch.where(path, inherited, native)


def two_paths(
    model: nn.Module, args: tuple[Any, ...], forks: Forks, batchnorms: Sequence[str] = (), randomness: str = "different"
) -> tuple[tuple[Any, dict[str, Any]], tuple[Any, dict[str, Any]]]:
    """Run ``model(*args)`` once for both paths.

    Args:
        forks: given this path's 0-d bool, a context that registers the hooks that fork the paths (with :func:`fork`)
            and yields a dict they fill with what the caller needs back (a gene's mix, its gate).
        batchnorms: module paths of the BatchNorm layers that may see both paths (those that run after the first
            gene): each gets its running estimates per path, and the native path's are written back.
        randomness: ``vmap``'s: ``different`` gives each path its own dropout masks, as two separate passes would.

    Returns:
        ``(output, filled dict)`` of the native path, then of the inherited one; every tensor has the shapes of a
        plain forward.
    """
    stats = {
        f"{name}.{key}": torch.stack([b, b])
        for name in batchnorms
        for key, b in model.get_submodule(name).named_buffers(recurse=False)
        if b is not None
    }
    rebuild: dict[str, Any] = {}

    def one_path(path: Tensor, stats: dict[str, Tensor]) -> tuple[Tensor, ...]:
        with forks(path) as filled:
            out = torch.func.functional_call(model, stats, args, strict=False) if stats else model(*args)
        leaves, rebuild["spec"] = pytree.tree_flatten((out, filled))
        rebuild["leaves"] = [_TENSOR if isinstance(t, Tensor) else t for t in leaves]  # vmap returns tensors only
        return tuple(t for t in leaves if isinstance(t, Tensor))

    device = next((t.device for t in pytree.tree_leaves(args) if isinstance(t, Tensor)), None)
    paths = torch.tensor([False, True], device=device)
    both = torch.func.vmap(one_path, randomness=randomness)(paths, stats)
    with torch.no_grad():
        for name, per_path in stats.items():
            model.get_buffer(name).copy_(per_path[NATIVE])
    return _path(both, NATIVE, rebuild), _path(both, INHERITED, rebuild)


def _path(both: tuple[Tensor, ...], p: int, rebuild: dict[str, Any]) -> Any:
    tensors = iter(t[p] for t in both)
    return pytree.tree_unflatten([next(tensors) if t is _TENSOR else t for t in rebuild["leaves"]], rebuild["spec"])
