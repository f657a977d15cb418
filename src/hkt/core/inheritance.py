"""ETM engine: extract parent genes, transfer them, mix them into the child, and (reverse direction)
run the parent's downstream blocks on the child's mix.

Cost model, the point of this module: the parent runs **once**. Its forward is paused inside the hook of
its last gene (in execution order); by then every parent gene has been extracted, so the child's whole
forward runs right there, with native and inherited paths stacked along the batch from the first child
gene onwards (``dual_path``). The parent then resumes from its last gene on the child's mix, which gives
the parent term of the objective with gradients flowing through the frozen parent into the child. Work
before the first gene is never computed twice.

Genes that run several times per forward (a recurrent block) or on other than ``B`` rows (RAFT's feature
encoder sees both frames) cannot be stacked; such gene sets are detected in the dry run and use separate
passes instead (``Inheritance._separate``): same outputs, one more parent forward.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from hkt.core.dual_path import frozen_running_stats, per_path_batchnorm, shared_skips, split_paths
from hkt.core.extract import PREACT, as_args, dry_run, hooks
from hkt.core.gene import Gene
from hkt.core.genetic_attention import build_attention
from hkt.core.kinds import FeatureKind
from hkt.core.outputs import read, write
from hkt.core.transfer import GeneShapeError, build_adapter, describe_adapter

log = logging.getLogger("hkt")


class _ParentDone(Exception):
    """Raised inside the parent's last gene hook when nothing downstream of it is needed."""


@dataclass
class Inherited:
    """Outputs of one inheritance pass (``B`` = batch size). Any field not requested is ``None``."""

    child: Any = None  # the child alone, as deployed
    inherited: Any = None  # the child with the inherited mixes flowing through its remaining blocks
    parent_on_mix: Any = None  # the frozen parent's downstream blocks on the child's mix
    parent: Any = None  # the parent's own output


def _batch_size(args: tuple[Any, ...]) -> int:
    for leaf in torch.utils._pytree.tree_leaves(args):
        if isinstance(leaf, Tensor):
            return leaf.shape[0]
    raise TypeError("the model input contains no tensor")


class Inheritance(nn.Module):
    """Transfer adapters and Genetic Attention for a list of genes, sized by one dry run.

    Args:
        parent, child: the two networks (not stored here; the method that owns them passes them in).
        genes: which blocks carry genes.
        example_input: one input batch (a tensor, or a tuple of positional inputs) for the dry run.
        attention: ``gated`` | ``static`` | ``learned`` | ``dot``; ``lam`` and ``parent_weight`` as in GA.
        native: also compute the child alone (stacked with the inherited path from the first child gene on).
        reverse: run the parent downstream of its last gene on the child's mix (builds the child->parent
            adapter when shapes differ).
        parent_own: also return the parent's own output (stacked with the mix after the parent's last gene).
        adapter: ``auto`` (identity where shapes agree) or ``learned`` (always trainable, identity at step 0).
    """

    def __init__(
        self,
        parent: nn.Module,
        child: nn.Module,
        genes: Sequence[Gene],
        example_input: Any,
        attention: str = "gated",
        lam: float = 0.6,
        parent_weight: float = 0.7,
        native: bool = True,
        reverse: bool = True,
        parent_own: bool = False,
        adapter: str = "auto",
    ) -> None:
        super().__init__()
        self.genes = list(genes)
        preact = [g.name for g in self.genes if PREACT in g.parent + g.child]
        if preact:
            raise GeneShapeError(
                f"gene(s) {preact}: {PREACT} reads a block's pre-activation for feature methods (reviewkd); "
                "HKT mixes into block outputs, so name the block itself"
            )
        self.native, self.reverse, self.parent_own = native, reverse, parent_own
        run = dry_run(parent, child, self.genes, example_input)
        p_feats, c_feats = run.parent, run.child
        b = _batch_size(as_args(example_input))
        # stacking the two paths along the batch needs genes that run once per forward on B rows; RAFT's feature
        # encoder (both frames, 2B rows) and its recurrent update block (once per iteration) do not
        self.parent_genes_once = all(n == 1 for n in run.parent_calls.values())
        self.stacked = (
            self.parent_genes_once
            and all(n == 1 for n in run.child_calls.values())
            and all(t.shape[0] == b for t in (*p_feats.values(), *c_feats.values()))
        )
        by_parent = {g.parent: i for i, g in enumerate(self.genes)}
        by_child = {g.child: i for i, g in enumerate(self.genes)}
        self.parent_order = [by_parent[p] for p in p_feats]
        self.child_order = [by_child[c] for c in c_feats]
        self.parent_kinds: list[FeatureKind] = [run.parent_kinds[g.parent] for g in self.genes]
        self.child_kinds: list[FeatureKind] = [run.child_kinds[g.child] for g in self.genes]
        self.transfers = nn.ModuleList()
        self.attentions = nn.ModuleList()
        for g, pk, ck in zip(self.genes, self.parent_kinds, self.child_kinds):
            self.transfers.append(build_adapter(pk, ck, g.name, adapter))
            self.attentions.append(build_attention(attention, ck.channels, ck.rank, lam, parent_weight))
            log.info(
                "gene %s: parent %s -> child %s, adapter %s", g.name, pk.describe(), ck.describe(), describe_adapter(self.transfers[-1])
            )
        last = self.parent_order[-1]
        self.back = build_adapter(self.child_kinds[last], self.parent_kinds[last], self.genes[last].name, adapter) if reverse else None
        self._rehearse(parent, child, as_args(example_input))

    def _rehearse(self, parent: nn.Module, child: nn.Module, args: tuple[Any, ...]) -> None:
        """Run one full inheritance pass on the example so that a model that cannot carry stacked paths
        fails here, with an explanation, instead of in the first training step."""
        try:
            with self.rehearsal(child):
                self(parent, child, args)
        except RuntimeError as e:
            raise GeneShapeError(
                f"an inheritance pass with genes {[g.name for g in self.genes]} failed: {e}. After the first child "
                "gene (and, with a KD term, after the parent's last gene) the batch carries two stacked paths (2B rows). "
                "Skips from before the gene are shared by both paths when they enter a module call (as in hkt's U-Net), "
                "but code that combines them with the stacked tensor inside one forward (e.g. torch.cat in a parent "
                "module's forward) or fixes the batch size before the gene cannot take them. Call the skip-consuming "
                "block as a module, move the first gene after such skips, or drop the stacked path (w_child=0 and kd_weight=0)."
            ) from e

    @contextmanager
    def rehearsal(self, child: nn.Module) -> Iterator[None]:
        """For passes on the example batch outside training: eval mode and no gradients inside the block, then the
        modes restored and the gates cleared (a rehearsal must not show up in the logged gates)."""
        was_training = [m.training for m in (self, child)]
        self.eval()
        child.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            self.train(was_training[0])
            child.train(was_training[1])
            for a in self.attentions:
                a.gate = None

    def mix(self, i: int, q: Tensor, v: Tensor) -> Tensor:
        """Gene ``i``'s Transfer and Mixture: child feature ``q`` and parent feature ``v``, each in its own layout, to
        the mix in the child's layout. Positions the parent cannot supply (a ViT child's class token under a CNN
        parent) stay native."""
        kind, transfer = self.child_kinds[i], self.transfers[i]
        qm, vm = kind.to_mix(q), transfer(v)
        keep = getattr(transfer, "keep", 0)
        if keep:
            return kind.from_mix(torch.cat([qm[..., :keep], self.attentions[i](qm[..., keep:], vm)], -1))
        return kind.from_mix(self.attentions[i](qm, vm))

    def to_parent(self, i: int, m: Tensor, own: Tensor) -> Tensor:
        """The child's mix ``m`` at gene ``i`` in the parent's layout, for the parent term; positions the child cannot
        supply (a ViT parent's class token over a CNN child) are the parent's ``own`` feature there."""
        if self.back is None:
            return m
        kind, pm = self.parent_kinds[i], self.back(m)
        keep = getattr(self.back, "keep", 0)
        if keep:
            pm = torch.cat([kind.to_mix(own)[..., :keep], pm], -1)
        return kind.from_mix(pm)

    def gates(self) -> dict[str, Tensor]:
        """Mean inheritance rate per gene over the last batch: ``{gene name: scalar}``."""
        return {g.name: a.gate.float().mean() for g, a in zip(self.genes, self.attentions) if a.gate is not None}

    def forward(self, parent: nn.Module, child: nn.Module, x: Any) -> Inherited:
        """One pass: parent once, child (native + inherited paths), parent downstream on the mix.

        Args:
            x: the input batch (tensor or tuple of positional inputs), ``B`` samples.
        """
        native, parent_on_mix, parent_own = self.native, self.reverse, self.parent_own
        args = as_args(x)
        b = _batch_size(args)
        if not self.stacked:
            return self._separate(parent, child, args)
        result = Inherited()
        v: dict[int, Tensor] = {}
        mixes: dict[int, Tensor] = {}
        first_child, last_parent = self.child_order[0], self.parent_order[-1]
        # the paths are stacked from the first child gene (child) and the parent's last gene (parent) on; before
        # that, 2B rows are the model's own and must be treated as in a plain forward
        child_stacked, parent_stacked = [False], [False]

        def child_hook(i: int):
            element = self.genes[i].child_element

            def hook(_m: nn.Module, _inp: Any, out: Any) -> Any:
                child_stacked[0] = True
                q = read(out, element)
                stacked = native and i != first_child
                q_native, q_inh = (q[:b], q[b:]) if stacked else (q, q)
                mixes[i] = self.mix(i, q_inh, v[i])
                return write(out, element, torch.cat([q_native, mixes[i]]) if native else mixes[i])

            return hook

        def run_child() -> None:
            child_hooks = {self.genes[i].child: child_hook(i) for i in self.child_order}
            with (
                hooks(child, child_hooks, "child"),
                per_path_batchnorm(child, b, lambda: child_stacked[0]) if native else nullcontext(),
                shared_skips(child, b, lambda: child_stacked[0]) if native else nullcontext(),
            ):
                out = child(*args)
            if native:
                result.child, result.inherited = split_paths(out, b)
            else:
                result.inherited = out

        def parent_hook(i: int):
            element = self.genes[i].parent_element

            def hook(_m: nn.Module, _inp: Any, out: Any) -> Any:
                v[i] = read(out, element).detach()
                if i != last_parent:
                    return None
                run_child()
                if not (parent_on_mix or parent_own):
                    raise _ParentDone
                if not parent_on_mix:
                    return None
                back = self.to_parent(i, mixes[i], v[i])
                parent_stacked[0] = parent_own
                return write(out, element, torch.cat([v[i], back]) if parent_own else back)

            return hook

        parent_hooks = {self.genes[i].parent: parent_hook(i) for i in self.parent_order}
        try:
            with (
                hooks(parent, parent_hooks, "parent"),
                shared_skips(parent, b, lambda: parent_stacked[0]) if parent_on_mix and parent_own else nullcontext(),
            ):
                out = parent(*args)
        except _ParentDone:
            return result
        if parent_on_mix and parent_own:
            result.parent, result.parent_on_mix = split_paths(out, b)
        elif parent_on_mix:
            result.parent_on_mix = out
        else:
            result.parent = out
        if result.parent is not None:
            result.parent = torch.utils._pytree.tree_map(lambda t: t.detach() if isinstance(t, Tensor) else t, result.parent)
        return result

    def _separate(self, parent: nn.Module, child: nn.Module, args: tuple[Any, ...]) -> Inherited:
        """The same outputs without stacking, for genes that run several times per forward or on other than B
        rows: the parent runs once without gradients recording every call of every gene; the child runs alone
        (native) and again with the mixes (its ``k``-th call of a gene mixes the parent's ``k``-th call, or the
        parent's last one if the child iterates more); for the parent term the parent runs again with its last
        gene's calls replaced by the child's mixes. Costs one more parent forward than stacking; only the
        native pass updates BatchNorm running statistics."""
        v: dict[int, list[Tensor]] = {i: [] for i in range(len(self.genes))}
        # without a KD term the parent's own output is not needed: stop at its last gene when that runs once
        stop_early = not self.parent_own and self.parent_genes_once

        def record(i: int):
            def hook(_m: nn.Module, _inp: Any, out: Any) -> None:
                v[i].append(read(out, self.genes[i].parent_element).detach())
                if stop_early and i == self.parent_order[-1]:
                    raise _ParentDone

            return hook

        result = Inherited()
        try:
            with torch.no_grad(), hooks(parent, {g.parent: record(i) for i, g in enumerate(self.genes)}, "parent"):
                own = parent(*args)
            result.parent = own if self.parent_own else None
        except _ParentDone:
            pass
        if self.native:
            result.child = child(*args)
        mixes: dict[int, list[Tensor]] = {i: [] for i in range(len(self.genes))}

        def mix(i: int):
            def hook(_m: nn.Module, _inp: Any, out: Any) -> Any:
                k = min(len(mixes[i]), len(v[i]) - 1)
                mixes[i].append(self.mix(i, read(out, self.genes[i].child_element), v[i][k]))
                return write(out, self.genes[i].child_element, mixes[i][-1])

            return hook

        with (
            hooks(child, {g.child: mix(i) for i, g in enumerate(self.genes)}, "child"),
            frozen_running_stats(child) if self.native else nullcontext(),
        ):
            result.inherited = child(*args)
        if self.reverse:
            last = self.parent_order[-1]
            calls = [0]

            def back(_m: nn.Module, _inp: Any, out: Any) -> Any:
                k = min(calls[0], len(mixes[last]) - 1)
                calls[0] += 1
                element = self.genes[last].parent_element
                return write(out, element, self.to_parent(last, mixes[last][k], read(out, element)))

            with hooks(parent, {self.genes[last].parent: back}, "parent"):
                result.parent_on_mix = parent(*args)
        return result
