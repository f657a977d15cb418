"""The two ways to run one inheritance pass; ``Inheritance`` picks one at construction (its dry run decides).

- :class:`SeparatePasses`, **the reference**: shaped like a distiller's ``forward_train``: the parent once
  without gradients (recording every call of every gene), the child alone, the child again with the mixes, and the
  parent again on the child's mix for the parent term. Simple, and it works for any gene set, including genes that
  run several times per forward (RAFT's recurrent block) or on other than ``B`` rows (RAFT's encoder sees both
  frames). It costs one more parent forward, and the child's work before its first gene twice.
- :class:`StackedPass`, **the speed-up**: the parent runs once. Its forward is paused inside the hook of its last
  gene (in execution order); by then every parent gene has been extracted, so the child's whole forward runs right
  there, with its native and inherited paths stacked along the batch from the first child gene on
  (``hkt.core.dual_path``). The parent then resumes from its last gene on the child's mix (and, with a KD term, on
  its own feature too, stacked), which gives the parent term with gradients flowing through the frozen parent into
  the child. It finds the stacked paths by their row count (``2 * B``), so ``Inheritance`` keeps it only where it
  reproduces the reference on the example batch. ``tests/core/test_engines.py`` checks that both give the same
  losses and gradients.

Both return an :class:`Inherited`, whose fields name the outputs everywhere: ``child``, ``inherited``,
``parent_on_mix``, ``parent``.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from hkt.core.dual_path import frozen_running_stats, per_path_batchnorm, shared_skips, split_paths
from hkt.core.extract import hooks
from hkt.core.outputs import read, write


@dataclass
class Inherited:
    """Outputs of one inheritance pass (``B`` = batch size). Any field not requested is ``None``."""

    child: Any = None  # the child alone, as deployed
    inherited: Any = None  # the child with the inherited mixes flowing through its remaining blocks
    parent_on_mix: Any = None  # the frozen parent's blocks after its last gene, on the child's mix (the parent term)
    parent: Any = None  # the parent's own output


class _ParentDone(Exception):
    """Raised inside the parent's last gene hook when nothing downstream of it is needed: stops the parent there.

    An exception, because a forward hook cannot otherwise end a user's ``forward`` early: the alternative is to run
    the parent's remaining blocks for nothing (the parent's head, or its whole last stage with stage genes)."""


def batch_size(args: tuple[Any, ...]) -> int:
    for leaf in torch.utils._pytree.tree_leaves(args):
        if isinstance(leaf, Tensor):
            return leaf.shape[0]
    raise TypeError("the model input contains no tensor")


class SeparatePasses:
    """The reference engine: every output from its own pass.

    The child's ``k``-th call of a gene mixes the parent's ``k``-th call of it (or the parent's last one when the
    child iterates more). Only the native pass updates BatchNorm running statistics."""

    def __init__(self, inh: Any, parent: nn.Module, child: nn.Module, args: tuple[Any, ...]) -> None:
        self.inh, self.parent, self.child, self.args = inh, parent, child, args
        self.parent_feats: dict[int, list[Tensor]] = {i: [] for i in range(len(inh.genes))}
        self.mixes: dict[int, list[Tensor]] = {i: [] for i in range(len(inh.genes))}

    def run(self) -> Inherited:
        inh, out = self.inh, Inherited()
        out.parent = self.parent_genes()
        if inh.native:
            out.child = self.child(*self.args)
        out.inherited = self.inherited()
        if inh.parent_on_mix:
            out.parent_on_mix = self.parent_on_mix()
        return out

    def parent_genes(self) -> Any:
        """Run the parent once without gradients, recording each gene's calls; its output when asked for (KD)."""
        inh = self.inh
        # without a KD term the parent's own output is not needed: stop at its last gene when that runs once
        stop_early = not inh.parent_own and inh.parent_genes_once

        def record(i: int):
            def hook(_m: nn.Module, _inp: Any, out: Any) -> None:
                self.parent_feats[i].append(read(out, inh.genes[i].parent_element).detach())
                if stop_early and i == inh.parent_order[-1]:
                    raise _ParentDone

            return hook

        try:
            with torch.no_grad(), hooks(self.parent, {g.parent: record(i) for i, g in enumerate(inh.genes)}, "parent"):
                own = self.parent(*self.args)
        except _ParentDone:
            return None
        return own if inh.parent_own else None

    def inherited(self) -> Any:
        """The child with each gene's output replaced by its mix with the parent's feature."""
        inh = self.inh

        def mix(i: int):
            def hook(_m: nn.Module, _inp: Any, out: Any) -> Any:
                feats = self.parent_feats[i]
                v = feats[min(len(self.mixes[i]), len(feats) - 1)]
                self.mixes[i].append(inh.mix(i, read(out, inh.genes[i].child_element), v))
                return write(out, inh.genes[i].child_element, self.mixes[i][-1])

            return hook

        with (
            hooks(self.child, {g.child: mix(i) for i, g in enumerate(inh.genes)}, "child"),
            frozen_running_stats(self.child) if inh.native else nullcontext(),
        ):
            return self.child(*self.args)

    def parent_on_mix(self) -> Any:
        """The parent again, its last gene's calls replaced by the child's mixes (in the parent's layout)."""
        inh = self.inh
        last, element = inh.parent_order[-1], inh.genes[inh.parent_order[-1]].parent_element
        calls = 0

        def back(_m: nn.Module, _inp: Any, out: Any) -> Any:
            nonlocal calls
            m = self.mixes[last][min(calls, len(self.mixes[last]) - 1)]
            calls += 1
            return write(out, element, inh.to_parent(last, m, read(out, element)))

        with hooks(self.parent, {inh.genes[last].parent: back}, "parent"):
            return self.parent(*self.args)


@dataclass
class StackedPass:
    """The speed-up: one parent forward, the child run inside its last gene's hook with both paths stacked.

    Its state is this object's fields: the parent's gene features, the child's mixes, and whether each network
    carries stacked paths yet (the child from its first gene on; the parent from its last gene on, with a KD term).
    Before those points a tensor of 2B rows is the model's own, and must be treated as in a plain forward."""

    inh: Any
    parent: nn.Module
    child: nn.Module
    args: tuple[Any, ...]
    parent_feats: dict[int, Tensor] = field(default_factory=dict)
    mixes: dict[int, Tensor] = field(default_factory=dict)
    child_stacked: bool = False
    parent_stacked: bool = False
    out: Inherited = field(default_factory=Inherited)

    def __post_init__(self) -> None:
        self.b = batch_size(self.args)

    def run(self) -> Inherited:
        inh, out = self.inh, self.out
        both = inh.parent_on_mix and inh.parent_own
        parent_hooks = {inh.genes[i].parent: self.parent_hook(i) for i in inh.parent_order}
        try:
            with (
                hooks(self.parent, parent_hooks, "parent"),
                shared_skips(self.parent, self.b, lambda: self.parent_stacked) if both else nullcontext(),
            ):
                result = self.parent(*self.args)
        except _ParentDone:
            return out
        if both:
            out.parent, out.parent_on_mix = split_paths(result, self.b)
        elif inh.parent_on_mix:
            out.parent_on_mix = result
        else:
            out.parent = result
        if out.parent is not None:
            out.parent = torch.utils._pytree.tree_map(lambda t: t.detach() if isinstance(t, Tensor) else t, out.parent)
        return out

    def parent_hook(self, i: int):
        inh, element = self.inh, self.inh.genes[i].parent_element

        def hook(_m: nn.Module, _inp: Any, out: Any) -> Any:
            self.parent_feats[i] = read(out, element).detach()
            if i != inh.parent_order[-1]:
                return None
            self.run_child()  # every parent gene is extracted by now
            if not (inh.parent_on_mix or inh.parent_own):
                raise _ParentDone
            if not inh.parent_on_mix:
                return None
            mix = inh.to_parent(i, self.mixes[i], self.parent_feats[i])
            self.parent_stacked = inh.parent_own
            return write(out, element, torch.cat([self.parent_feats[i], mix]) if inh.parent_own else mix)

        return hook

    def run_child(self) -> None:
        inh, b = self.inh, self.b
        child_hooks = {inh.genes[i].child: self.child_hook(i) for i in inh.child_order}
        with (
            hooks(self.child, child_hooks, "child"),
            per_path_batchnorm(self.child, b, lambda: self.child_stacked) if inh.native else nullcontext(),
            shared_skips(self.child, b, lambda: self.child_stacked) if inh.native else nullcontext(),
        ):
            result = self.child(*self.args)
        if inh.native:
            self.out.child, self.out.inherited = split_paths(result, b)
        else:
            self.out.inherited = result

    def child_hook(self, i: int):
        inh, element, b = self.inh, self.inh.genes[i].child_element, self.b

        def hook(_m: nn.Module, _inp: Any, out: Any) -> Any:
            self.child_stacked = True
            q = read(out, element)
            stacked = inh.native and i != inh.child_order[0]  # before the first gene the child carries one path
            q_native, q_inherited = (q[:b], q[b:]) if stacked else (q, q)
            self.mixes[i] = inh.mix(i, q_inherited, self.parent_feats[i])
            return write(out, element, torch.cat([q_native, self.mixes[i]]) if inh.native else self.mixes[i])

        return hook
