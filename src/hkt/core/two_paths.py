"""Two paths through one network in one forward: the native path and the inherited one, as a ``vmap`` dimension.

The child alone and the child with the inherited mixes differ only from the first gene on. ``torch.func.vmap`` over a
*path* dimension of size 2 runs both as one forward: a tensor that does not depend on the path (everything before the
first gene, a skip connection from there, the parent's features) is computed once and broadcast, and everything
downstream of a gene carries both paths. A gene forks the paths with ``torch.where(path, inherited, native)``, so
nothing has to recognise a path by a tensor's row count, and a model whose own batch holds two views (a Siamese
encoder, both frames of a flow network) runs as in a plain forward.

BatchNorm is the one layer whose batching across paths would change the maths of a plain forward: it would update its
running estimates once per path (vmap refuses that). Inside the forward of both paths, :class:`PathBatchNorm` routes
every ``F.batch_norm`` (``nn.BatchNorm*`` and subclasses such as timm's ``BatchNormAct2d`` call it) to an op whose
``vmap`` rule runs PyTorch's own kernel once per path on views of the input: the native path with the user's running
estimates, the inherited path with none (its estimates would be thrown away). That leaves the user's layers exactly as
a training forward of the child alone would, touches no module, and autograd records the kernels as in any forward.
Why not functorch's own rule with a copy of the estimates per path (``functional_call``), as before: it folds the path
dimension into the channels, which copies every input and output and loses ``channels_last`` (on CPU, a third of the
engine's time went to ``aten::copy_``).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree

NATIVE, INHERITED = 0, 1
_TENSOR = object()  # marks where a tensor leaf goes back when an output is rebuilt after vmap

Forks = Callable[[Tensor], AbstractContextManager[dict[str, Any]]]


def fork(path: Tensor, native: Tensor, inherited: Tensor) -> Tensor:
    """``native`` on the native path and ``inherited`` on the inherited one (``path``: this path's 0-d bool, as
    ``two_paths`` hands it to ``forks``); either may already carry both paths."""
    return torch.where(path, inherited, native)


def _carries_paths(t: Tensor) -> bool:
    """Whether ``t`` carries the paths' vmap dimension; functorch has no public test for it (a torch upgrade that
    changes this private function fails the engine tests, never silently)."""
    return torch._C._functorch.is_batchedtensor(t)


def fork_mix(path: Tensor, q: Tensor, mix: Callable[[Tensor], Tensor]) -> Tensor:
    """``q`` on the native path and ``mix(q)`` on the inherited one, with ``mix`` run on the inherited path only.

    At the first gene ``q`` does not depend on the path yet, so the mix runs once and :func:`fork` forks. At a later
    gene ``q`` carries both paths, and a plain ``mix(q)`` would also compute a mix of the native path only to throw
    it away (the adapters and Genetic Attention on twice the data): :func:`inherited_only` runs it on the inherited
    slice. ``mix`` must return ``q``'s shape and may read only unbatched tensors besides its argument (the parent's
    feature, its own parameters)."""
    if not _carries_paths(q):
        return fork(path, q, mix(q))
    key = id(mix)
    _MIXES[key] = mix
    try:
        return inherited_only(q, key)
    finally:
        del _MIXES[key]


_MIXES: dict[int, Callable[[Tensor], Tensor]] = {}  # an op takes no Python callable: fork_mix lends it by key


@torch.library.custom_op("hkt::inherited_only", mutates_args=())
def inherited_only(q: Tensor, key: int) -> Tensor:
    """``q`` ``(*)`` on the native path, the mix lent under ``key`` on the inherited one; for the paths' ``vmap``,
    where the rule below runs it."""
    raise RuntimeError("hkt::inherited_only runs only under the two paths' vmap, where fork_mix calls it")


@inherited_only.register_vmap
def _mix_inherited_path(info: Any, in_dims: tuple[int | None, ...], q: Tensor, key: int) -> tuple[Tensor, int]:
    q = q.movedim(in_dims[0], 0)  # (paths, *)
    return torch.stack([q[NATIVE], _MIXES[key](q[INHERITED])]), 0


@torch.library.custom_op("hkt::path_batch_norm", mutates_args=("running_mean", "running_var"))
def path_batch_norm(
    x: Tensor, running_mean: Tensor, running_var: Tensor, weight: Tensor | None, bias: Tensor | None, momentum: float, eps: float
) -> Tensor:
    """Training-mode BatchNorm of ``x`` ``(B, C, *)`` for the paths' ``vmap``, where the rule below runs it."""
    raise RuntimeError("hkt::path_batch_norm runs only under the two paths' vmap, where PathBatchNorm routes to it")


@path_batch_norm.register_vmap
def _per_path(
    info: Any,
    in_dims: tuple[int | None, ...],
    x: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    momentum: float,
    eps: float,
) -> tuple[Tensor, int]:
    x_dim, mean_dim, var_dim, weight_dim, bias_dim = in_dims[:5]
    if (mean_dim, var_dim, weight_dim, bias_dim) != (None,) * 4:
        raise RuntimeError("hkt::path_batch_norm: a BatchNorm's running estimates or affine weights differ per path; only its input may")
    x = x.movedim(x_dim, 0)  # (paths, B, C, *)
    y = [
        F.batch_norm(x[p], running_mean, running_var, weight, bias, True, momentum, eps)
        if p == NATIVE
        else F.batch_norm(x[p], None, None, weight, bias, True, momentum, eps)
        for p in range(info.batch_size)
    ]
    return torch.stack(y), 0


def _route(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    # only an input that carries the paths needs the op; everything else (a layer before the first gene, eval mode,
    # no running estimates) is an ordinary batch_norm that vmap batches by itself
    if training and running_mean is not None and _carries_paths(input):
        return path_batch_norm(input, running_mean, running_var, weight, bias, momentum, eps)
    return F.batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)


class PathBatchNorm(TorchFunctionMode):
    """Inside a forward of both paths, route every ``F.batch_norm`` (``nn.BatchNorm*`` and subclasses such as timm's
    ``BatchNormAct2d`` call it) to :func:`path_batch_norm`; no module is touched."""

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None) -> Any:
        if func is F.batch_norm:
            return _route(*args, **(kwargs or {}))
        return func(*args, **(kwargs or {}))


def two_paths(
    model: nn.Module, args: tuple[Any, ...], forks: Forks, randomness: str = "different"
) -> tuple[tuple[Any, dict[str, Any]], tuple[Any, dict[str, Any]]]:
    """Run ``model(*args)`` once for both paths.

    Args:
        forks: given this path's 0-d bool, a context that registers the hooks that fork the paths (with :func:`fork`)
            and yields a dict they fill with what the caller needs back (a gene's mix, its gate).
        randomness: ``vmap``'s: ``different`` gives each path its own dropout masks, as two separate passes would.

    Returns:
        ``(output, filled dict)`` of the native path, then of the inherited one; every tensor has the shapes of a
        plain forward.
    """
    rebuild: dict[str, Any] = {}

    def one_path(path: Tensor) -> tuple[Tensor, ...]:
        with forks(path) as filled, PathBatchNorm():
            out = model(*args)
        leaves, rebuild["spec"] = pytree.tree_flatten((out, filled))
        rebuild["leaves"] = [_TENSOR if isinstance(t, Tensor) else t for t in leaves]  # vmap returns tensors only
        return tuple(t for t in leaves if isinstance(t, Tensor))

    device = next((t.device for t in pytree.tree_leaves(args) if isinstance(t, Tensor)), None)
    both = torch.func.vmap(one_path, randomness=randomness)(torch.tensor([False, True], device=device))
    return _path(both, NATIVE, rebuild), _path(both, INHERITED, rebuild)


def _path(both: tuple[Tensor, ...], p: int, rebuild: dict[str, Any]) -> Any:
    tensors = iter(t[p] for t in both)
    return pytree.tree_unflatten([next(tensors) if t is _TENSOR else t for t in rebuild["leaves"]], rebuild["spec"])
