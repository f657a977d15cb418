"""ETM: extract parent genes, transfer them, mix them into the child, and run the parent's blocks after its last gene
on the child's mix (the parent term).

``Inheritance`` owns what training learns (one Transfer adapter and one Genetic Attention per gene, the adapter of
the parent term) and is sized by one dry run, which also picks the engine that runs a pass
(``hkt.core.engines``): the stacked speed-up when every gene runs once per forward on ``B`` rows, else the
separate-pass reference (RAFT's feature encoder sees both frames; its update block runs once per iteration).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import fields
from typing import Any

import torch
from torch import Tensor, nn

from hkt.core.engines import Inherited, SeparatePasses, StackedPass, batch_size
from hkt.core.extract import PREACT, as_args, dry_run
from hkt.core.gene import Gene
from hkt.core.genetic_attention import build_attention
from hkt.core.kinds import FeatureKind
from hkt.core.transfer import GeneShapeError, build_adapter, describe_adapter

log = logging.getLogger("hkt")


class Inheritance(nn.Module):
    """Transfer adapters and Genetic Attention for a list of genes, sized by one dry run.

    Args:
        parent, child: the two networks (not stored here; the method that owns them passes them in).
        genes: which blocks carry genes.
        example_input: one input batch (a tensor, or a tuple of positional inputs) for the dry run.
        attention: ``gated`` | ``static`` | ``learned`` | ``lepoket``; ``lam`` and ``parent_weight`` as in GA.
        native: also compute the child alone (stacked with the inherited path from the first child gene on).
        parent_on_mix: run the parent's blocks after its last gene on the child's mix, the parent term (builds the
            child -> parent adapter ``back`` when shapes differ).
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
        parent_on_mix: bool = True,
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
        self.native, self.parent_on_mix, self.parent_own = native, parent_on_mix, parent_own
        run = dry_run(parent, child, self.genes, example_input)
        p_feats, c_feats = run.parent, run.child
        b = batch_size(as_args(example_input))
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
        self.back = (
            build_adapter(self.child_kinds[last], self.parent_kinds[last], self.genes[last].name, adapter) if parent_on_mix else None
        )
        if parent_on_mix:  # first: the rehearsal's passes without gradients then leave no graph in a model's caches
            self._check_parent_term_has_gradients(parent, child, as_args(example_input))
        self._rehearse(parent, child, as_args(example_input))

    def _rehearse(self, parent: nn.Module, child: nn.Module, args: tuple[Any, ...]) -> None:
        """Run the reference engine on the example, and the stacked one against it when the dry run chose it.

        The stacked engine infers what to stack and split from row counts (``2 * B`` rows after the first gene), which a
        model can defeat: a module that concatenates a skip from before the gene inside its own forward, or an output
        that holds ``2 * B`` rows of the model's own. So the speed-up is used only where it reproduces the reference on
        the example batch (eval mode); otherwise this logs why and every pass runs the reference. A model that the
        reference cannot run fails here, with the reason, instead of in the first training step."""
        with self.rehearsal(child):
            try:
                reference = SeparatePasses(self, parent, child, args).run()
            except RuntimeError as e:
                raise GeneShapeError(f"an inheritance pass with genes {[g.name for g in self.genes]} failed: {e}") from e
            self._check_mix_reaches_output(reference)
            if not self.stacked:
                return
            try:
                why = disagreement(StackedPass(self, parent, child, args).run(), reference)
            except RuntimeError as e:
                why = f"it failed ({e})"
        if why:
            self.stacked = False
            log.warning(
                "genes %s: the stacked engine (one parent pass) does not reproduce the separate-pass reference on the "
                "example batch: %s; every step runs the reference instead (correct, about one parent and one child-stem "
                "pass slower). Usual cause: code that combines a tensor from before the first gene with later ones inside "
                "one forward (call that block as a module, or move the first gene after it).",
                [g.name for g in self.genes],
                why,
            )

    def _check_parent_term_has_gradients(self, parent: nn.Module, child: nn.Module, args: tuple[Any, ...]) -> None:
        """Fail at construction, naming the module, when the parent's blocks after its last gene cut the gradient of
        the mix (a ``torch.no_grad()`` or ``set_grad_enabled(False)`` inside the parent's forward), and warn when the
        parent's output does not read the mix at all: the parent term would then train nothing, silently. One pass
        of the reference engine, in eval mode (no statistic moves), with gradients; the parent's blocks after its last
        gene are the same in both engines. A model that caches tensors of its last forward (torchvision RAFT's
        correlation pyramid) holds a graph after this pass, so the rehearsal, without gradients, runs after it."""
        cut: list[str] = []

        def grads(tree: Any) -> list[bool]:
            return [t.requires_grad for t in torch.utils._pytree.tree_leaves(tree) if isinstance(t, Tensor) and t.is_floating_point()]

        def watch(name: str) -> Any:
            def hook(_m: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
                if not cut and any(grads(inputs)) and grads(output) and not any(grads(output)):
                    cut.append(name or type(parent).__name__)  # hooks fire innermost first: the module that cut it

            return hook

        handles = [m.register_forward_hook(watch(n)) for n, m in parent.named_modules()]
        try:
            with self.rehearsal(child), torch.enable_grad():
                out = SeparatePasses(self, parent, child, args).run().parent_on_mix
        finally:
            for h in handles:
                h.remove()
        if not grads(out) or any(grads(out)):
            return
        genes = [g.name for g in self.genes]
        if cut:
            raise GeneShapeError(
                f"genes {genes}: the parent term has no gradient: module {cut[0]!r} returns a result without gradient from an "
                "input with one (torch.no_grad() or torch.set_grad_enabled(False) inside the parent's forward), so the "
                "parent's blocks after the last gene could not train the child. Remove that from the parent's forward (the "
                "parent is frozen anyway: its weights never get gradients), or set w_parent: 0"
            )
        log.warning(
            "genes %s: the parent's output does not depend on the mix at its last gene (the parent computes its output "
            "without that block's result, e.g. the block returns the logits too), so the parent term trains nothing; "
            "choose a gene whose output the parent's head reads, or set w_parent: 0",
            genes,
        )

    def _check_mix_reaches_output(self, reference: Inherited) -> None:
        """Warn when the inherited path's output equals the child's own: the mixes reach nothing the child outputs
        (a ViT that classifies from its class token, with the only gene at its last block and a CNN parent, which has
        no class token to give), so the inherit term is the child term again and only the parent term uses the genes."""
        if reference.child is None or differs(reference.inherited, reference.child, tolerance=0.0):
            return
        log.warning(
            "genes %s: the inherited mix does not change the child's output on the example batch, so the inherit term "
            "equals the child term and only the parent term reads these genes. Usual cause: a gene at a ViT's last "
            "block whose mixed positions (patch tokens) do not reach its head (class-token pooling); add a gene at an "
            "earlier block so the mix flows through the rest of the child.",
            [g.name for g in self.genes],
        )

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
        """One pass: the parent's genes, the child (native and inherited paths), the parent term on the mix.

        Args:
            x: the input batch (tensor or tuple of positional inputs), ``B`` samples.
        """
        engine = StackedPass if self.stacked else SeparatePasses
        return engine(self, parent, child, as_args(x)).run()


def disagreement(fast: Inherited, reference: Inherited) -> str | None:
    """Why two passes differ (the first field and element that does), or ``None`` when they agree up to round-off."""
    for f in fields(Inherited):
        if why := differs(getattr(fast, f.name), getattr(reference, f.name), f.name):
            return why
    return None


def differs(a: Any, b: Any, name: str = "output", tolerance: float = 1e-3) -> str | None:
    """Why two (nested) outputs differ: element count, shape, or a difference beyond ``tolerance`` relative to the
    reference ``b``'s largest magnitude (round-off of batched kernels; 0 asks for equality); ``None`` when they agree."""
    a, b = torch.utils._pytree.tree_leaves(a), torch.utils._pytree.tree_leaves(b)
    if len(a) != len(b):
        return f"{name}: {len(a)} output elements, the reference has {len(b)}"
    for k, (s, r) in enumerate(zip(a, b)):
        if not isinstance(r, Tensor):
            continue
        if not isinstance(s, Tensor) or s.shape != r.shape:
            return f"{name}[{k}]: shape {tuple(getattr(s, 'shape', ()))}, the reference has {tuple(r.shape)}"
        diff = (s.float() - r.float()).abs().max().item() if r.numel() else 0.0
        if not diff <= tolerance * (1.0 + r.float().abs().max().item()):
            return f"{name}[{k}]: differs by up to {diff:.3g}"
    return None
