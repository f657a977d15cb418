"""The two ways to run one inheritance pass; ``Inheritance`` picks one at construction (its dry run and rehearsal).

- :class:`SeparatePasses`, **the reference** and the definition of correct: shaped like a distiller's
  ``forward_train``: the parent once without gradients (recording every call of every gene), the child alone, the
  child again with the mixes (its BatchNorm statistics on copies, so only the child alone moves them), and the parent
  again on the child's mix for the parent term. It works for any gene set, including genes that run several times
  per forward (RAFT's recurrent block), at the cost of one more parent forward and the child's work before its first
  gene twice.
- :class:`OnePass`, **the speed-up**: the parent runs once, and the child's native and inherited paths run as one
  forward (``hkt.core.two_paths``: a vmap dimension of size 2, forked at the genes). With a parent term the child
  runs when the parent reaches its last gene (by then every parent gene has been read), and the parent carries on
  from there on the child's mix (and on its own feature as a second path when a KD term reads the parent's output).
  ``tests/core/test_engines.py`` checks that both give the same losses and gradients.

Both return an :class:`Inherited`, whose fields name the outputs everywhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils import _pytree as pytree

from hkt.core.extract import Hook, hooks
from hkt.core.outputs import read, write
from hkt.core.two_paths import INHERITED, NATIVE, fork, fork_mix, two_paths


@dataclass
class Inherited:
    """Outputs of one inheritance pass (``B`` = batch size). Any field not requested is ``None``."""

    child: Any = None  # the child alone, as deployed
    inherited: Any = None  # the child with the inherited mixes flowing through its remaining blocks
    parent_on_mix: Any = None  # the frozen parent's blocks after its last gene, on the child's mix (the parent term)
    parent: Any = None  # the parent's own output


def detached(tree: Any) -> Any:
    return pytree.tree_map(lambda t: t.detach() if isinstance(t, Tensor) else t, tree)


class SeparatePasses:
    """The reference engine: every output from its own pass.

    The child's ``k``-th call of a gene mixes the parent's ``k``-th call of it. Only the child alone updates BatchNorm
    running statistics: the inherited pass runs on copies of them (``torch.func.functional_call``)."""

    def __init__(self, inh: Any, parent: nn.Module, child: nn.Module, args: tuple[Any, ...]) -> None:
        self.inh, self.parent, self.child, self.args = inh, parent, child, args
        self.parent_feats: dict[int, list[Tensor]] = {i: [] for i in range(len(inh.genes))}
        self.mixes: dict[int, list[Tensor]] = {i: [] for i in range(len(inh.genes))}

    def run(self) -> Inherited:
        inh, out = self.inh, Inherited()
        own = self.parent_genes()
        out.parent = own if inh.parent_own else None
        if inh.native:
            out.child = self.child(*self.args)
        out.inherited = self.inherited()
        if inh.parent_on_mix:
            out.parent_on_mix = self.parent_on_mix()
        return out

    def parent_genes(self) -> Any:
        """Run the parent once without gradients, recording each gene's calls; returns its output."""
        inh = self.inh

        def record(i: int) -> Hook:
            return lambda _m, _inp, out: self.parent_feats[i].append(read(out, inh.genes[i].parent_element).detach())

        with torch.no_grad(), hooks(self.parent, {g.parent: record(i) for i, g in enumerate(inh.genes)}, "parent"):
            return self.parent(*self.args)

    def inherited(self) -> Any:
        """The child with each gene's output replaced by its mix with the parent's feature."""
        inh = self.inh

        def mix(i: int) -> Hook:
            def hook(_m: nn.Module, _inp: Any, out: Any) -> Any:
                v = self.parent_feats[i][len(self.mixes[i])]
                self.mixes[i].append(inh.mix(i, read(out, inh.genes[i].child_element), v))
                return write(out, inh.genes[i].child_element, self.mixes[i][-1])

            return hook

        with hooks(self.child, {g.child: mix(i) for i, g in enumerate(inh.genes)}, "child"):
            if not inh.native:  # the only pass of the child: its statistics move as in any training forward
                return self.child(*self.args)
            copies = {name: b.clone() for name, b in self.child.named_buffers()}
            return torch.func.functional_call(self.child, copies, self.args, strict=False)

    def parent_on_mix(self) -> Any:
        """The parent again, its last gene's calls replaced by the child's mixes (in the parent's layout)."""
        inh = self.inh
        last, element = inh.parent_order[-1], inh.genes[inh.parent_order[-1]].parent_element
        calls = iter(self.mixes[last])

        def back(_m: nn.Module, _inp: Any, out: Any) -> Any:
            return write(out, element, inh.to_parent(last, next(calls), read(out, element)))

        with hooks(self.parent, {inh.genes[last].parent: back}, "parent"):
            return self.parent(*self.args)


@dataclass
class OnePass:
    """The speed-up: one parent forward, and one child forward that carries the native and the inherited paths.

    For genes that run once per forward in both networks (``Inheritance`` checks that in its dry run, and that this
    engine reproduces the reference on the example batch)."""

    inh: Any
    parent: nn.Module
    child: nn.Module
    args: tuple[Any, ...]
    parent_feats: dict[int, Tensor] = field(default_factory=dict)
    mixes: dict[int, Tensor] = field(default_factory=dict)
    out: Inherited = field(default_factory=Inherited)

    def run(self) -> Inherited:
        inh, out = self.inh, self.out
        if not inh.parent_on_mix:  # no parent term: the parent's genes (and output, for KD), then the child
            with torch.no_grad(), hooks(self.parent, self.reading_parent(), "parent"):
                own = self.parent(*self.args)
            out.parent = own if inh.parent_own else None
            self.run_child()
        elif inh.parent_own:  # the parent carries its own feature and the child's mix from its last gene on
            (own, _), (out.parent_on_mix, _) = two_paths(self.parent, self.args, self.parent_forks, randomness="same")
            out.parent = detached(own)
        else:
            with hooks(self.parent, self.reading_parent(lambda _path, _own, mix: mix), "parent"):
                out.parent_on_mix = self.parent(*self.args)
        return out

    def reading_parent(self, carry_on: Any = None, path: Tensor | None = None) -> dict[str, Hook]:
        """Hooks on the parent's genes that read each feature; with ``carry_on``, the last one also runs the child
        and returns ``carry_on(path, own feature, the child's mix in the parent's layout)`` as the gene's output."""
        inh = self.inh

        def at(i: int) -> Hook:
            element = inh.genes[i].parent_element

            def hook(_m: nn.Module, _inp: Any, out: Any) -> Any:
                self.parent_feats[i] = read(out, element).detach()
                if carry_on is None or i != inh.parent_order[-1]:
                    return None
                self.run_child()  # every parent gene has been read by now
                return write(out, element, carry_on(path, self.parent_feats[i], inh.to_parent(i, self.mixes[i], self.parent_feats[i])))

            return hook

        return {inh.genes[i].parent: at(i) for i in inh.parent_order}

    @contextmanager
    def parent_forks(self, path: Tensor) -> Iterator[dict[str, Any]]:
        with hooks(self.parent, self.reading_parent(fork, path), "parent"):
            yield {}

    def run_child(self) -> None:
        inh = self.inh
        if not inh.native:  # one path: the mixes replace the genes' outputs
            with self.child_forks(None) as filled:
                self.out.inherited = self.child(*self.args)
        else:
            (self.out.child, _), (self.out.inherited, filled) = two_paths(self.child, self.args, self.child_forks)
        for i, a in enumerate(inh.attentions):
            self.mixes[i], a.gate = filled[f"mix{i}"], filled[f"gate{i}"]

    @contextmanager
    def child_forks(self, path: Tensor | None) -> Iterator[dict[str, Any]]:
        """Hooks on the child's genes that mix the parent's feature into the inherited path (``fork_mix``: the native
        path keeps its own feature, and no mix is computed for it)."""
        inh, filled = self.inh, {}

        def at(i: int) -> Hook:
            element = inh.genes[i].child_element

            def hook(_m: nn.Module, _inp: Any, out: Any) -> Any:
                q, mix = read(out, element), lambda q: inh.mix(i, q, self.parent_feats[i])
                filled[f"mix{i}"] = mix(q) if path is None else fork_mix(path, q, mix)
                filled[f"gate{i}"] = inh.attentions[i].gate
                return write(out, element, filled[f"mix{i}"])

            return hook

        with hooks(self.child, {inh.genes[i].child: at(i) for i in inh.child_order}, "child"):
            yield filled


__all__ = ["INHERITED", "NATIVE", "Inherited", "OnePass", "SeparatePasses"]
