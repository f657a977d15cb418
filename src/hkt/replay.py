"""Resume a frozen parent at its last gene from stored gene outputs: what lets the parent cache serve HKT.

Outside ``hkt.core`` because it is the one place that swaps modules of a user's network (the parent's, for the
duration of a cached step, restored in ``finally``): a forward hook can replace a module's output but cannot skip its
work, and skipping the work is the point of the cache. Only with ``parent_cache:`` set.

HKT cannot skip the parent: the child's mix at the parent's last gene flows on through the parent's remaining
layers (the parent term). It can skip the layers *before* that gene. For a parent whose genes are all top-level
modules (a ResNet's ``layer1`` … ``layer3``, ``avgpool``), every top-level module called up to the last gene is
swapped for a :class:`Replay` that returns, without computing, its stored output (a gene) or, for the others
(``conv1``, ``bn1``), zeros of the right shape. The forward function still runs: its own code between the modules
(a ReLU, a flatten) sees the replayed tensors, and everything downstream of the last gene is computed as before.

That placeholders feed nothing that matters is not assumed: :func:`rehearse` runs the inheritance pass on an
example batch plain, then replayed with zeros and with random values in the placeholders, and accepts the plan only
when every output agrees bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from hkt.core.gene import Gene


class Replay(nn.Module):
    """A module that ignores its input and returns ``source()``."""

    def __init__(self, source: Callable[[], Tensor]) -> None:
        super().__init__()
        self.source = source

    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        return self.source()


@dataclass
class ReplayPlan:
    """Which top-level parent modules to replay (in call order), and the per-row shape and dtype of the ones that are
    not genes (their placeholders)."""

    modules: list[str]
    placeholders: dict[str, tuple[tuple[int, ...], torch.dtype]]


def plan_replay(parent: nn.Module, genes: Sequence[Gene], example: Tensor) -> ReplayPlan | str:
    """The plan for ``parent`` and ``genes``, or why there is none (a reason to log)."""
    top = dict(parent.named_children())
    paths = [g.parent for g in genes]
    nested = [p for p in paths if p not in top]
    if nested:
        return f"parent gene(s) {nested} are not top-level modules of {type(parent).__name__}"
    calls: list[str] = []
    outs: dict[str, Any] = {}

    def record(name: str) -> Callable[..., None]:
        def hook(_m: nn.Module, _inp: Any, out: Any) -> None:
            calls.append(name)
            outs[name] = out

        return hook

    handles = [m.register_forward_hook(record(n)) for n, m in top.items()]
    try:
        with torch.no_grad():
            parent(example)
    finally:
        for h in handles:
            h.remove()
    last = max(calls.index(p) for p in paths)
    upstream = calls[: last + 1]
    if len(set(upstream)) != len(upstream):
        return "a parent module before the last gene runs more than once per forward"
    if not all(isinstance(outs[n], Tensor) and outs[n].shape[0] == example.shape[0] for n in upstream):
        return "a parent module before the last gene returns something other than one tensor per row"
    return ReplayPlan(upstream, {n: (tuple(outs[n].shape[1:]), outs[n].dtype) for n in upstream if n not in paths})


@contextmanager
def replaying(
    parent: nn.Module, plan: ReplayPlan, genes: dict[str, Tensor], batch: int, fill: Callable[..., Tensor] = torch.zeros
) -> Iterator[None]:
    """Inside the block, ``parent``'s planned modules return ``genes[name]`` (stored gene outputs) or a ``fill`` of
    the placeholder's shape for ``batch`` rows."""
    device = next(iter(genes.values())).device
    originals = {n: getattr(parent, n) for n in plan.modules}

    def source(name: str) -> Callable[[], Tensor]:
        if name in genes:
            return lambda: genes[name]
        shape, dtype = plan.placeholders[name]
        return lambda: fill((batch, *shape), dtype=dtype, device=device)

    try:
        for name in plan.modules:
            setattr(parent, name, Replay(source(name)))
        yield
    finally:
        for name, module in originals.items():
            setattr(parent, name, module)


def rehearse(plan: ReplayPlan, parent: nn.Module, run: Callable[[], Any], genes: dict[str, Tensor], batch: int) -> str | None:
    """``None`` when ``run()`` (an inheritance pass) gives bit-identical outputs plain and replayed from ``genes``
    (the parent's gene outputs of a plain forward, as the cache stores them), with zeros and with random values in
    the placeholders; else the reason."""
    plain = run()
    for fill in (torch.zeros, lambda shape, dtype, device: torch.randn(shape, device=device).to(dtype)):
        with replaying(parent, plan, genes, batch, fill):
            again = run()
        for field in ("child", "inherited", "parent_on_mix", "parent"):
            a, b = getattr(plain, field), getattr(again, field)
            if (a is None) != (b is None) or a is not None and not torch.equal(a, b):
                return f"the parent's output {field} changed when the modules before its last gene were replayed"
    return None
