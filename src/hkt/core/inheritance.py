"""ETM: extract parent genes, transfer them, mix them into the child, and run the parent's blocks after its last gene
on the child's mix (the parent term).

``Inheritance`` owns what training learns (one Transfer adapter and one Genetic Attention per gene, the adapter of
the parent term) and is sized by one dry run, which also picks the engine that runs a pass
(``hkt.core.engines``): the one-pass speed-up when every gene runs once per forward and a rehearsed training step of
it equals the separate-pass reference's, else the reference (RAFT's recurrent update block runs once per iteration).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import fields
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.dropout import _DropoutNd

from hkt.core.engines import Inherited, OnePass, SeparatePasses, detached
from hkt.core.extract import as_args, dry_run
from hkt.core.gene import Gene
from hkt.core.genetic_attention import build_attention
from hkt.core.kinds import FeatureKind
from hkt.core.transfer import GeneShapeError, build_adapter, describe_adapter

log = logging.getLogger("hkt")
DROP_MODULES = {"DropPath", "DropBlock2d", "StochasticDepth"}  # timm's and torchvision's stochastic depth


class Inheritance(nn.Module):
    """Transfer adapters and Genetic Attention for a list of genes, sized by one dry run.

    Args:
        parent, child: the two networks (not stored here; the method that owns them passes them in).
        genes: which blocks carry genes.
        example_input: one input batch (a tensor, or a tuple of positional inputs) for the dry run.
        attention: ``gated`` | ``static`` | ``learned`` | ``lepoket``; ``lam`` and ``parent_weight`` as in GA.
        native: also compute the child alone (a second path beside the inherited one from the first child gene on).
        parent_on_mix: run the parent's blocks after its last gene on the child's mix, the parent term (builds the
            child -> parent adapter ``back`` when shapes differ).
        parent_own: also return the parent's own output (a second path beside the mix after the parent's last gene).
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
        read = [g.name for g in self.genes if "@" in g.parent + g.child]
        if read:
            raise GeneShapeError(
                f"gene(s) {read}: a path '<block>@<reader>' reads something other than the block's output (@preact: its "
                "pre-activation, for feature methods such as reviewkd); HKT mixes into block outputs, so name the block itself"
            )
        self.native, self.parent_on_mix, self.parent_own = native, parent_on_mix, parent_own
        self._said_mixed = False
        run = dry_run(parent, child, self.genes, example_input)
        p_feats, c_feats = run.parent, run.child
        for g in self.genes:
            if run.parent_calls[g.parent] != run.child_calls[g.child]:
                raise GeneShapeError(
                    f"gene {g.name!r}: the parent's block {g.parent!r} runs {run.parent_calls[g.parent]} time(s) per forward and "
                    f"the child's block {g.child!r} {run.child_calls[g.child]}; the child's k-th call inherits the parent's k-th, "
                    "so pair blocks that run equally often (for RAFT: the same number of iterations)"
                )
        recurrent = [g.name for g in self.genes if run.parent_calls[g.parent] > 1]
        self.one_pass = not recurrent
        if recurrent:  # the child would have to run inside the parent's first call, before the later calls exist
            log.info(
                "genes %s run several times per forward: the child's mix at every call of the parent's last gene is needed "
                "before the parent's later calls exist, so every step runs the separate-pass reference",
                recurrent,
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
            try:
                self.transfers.append(build_adapter(pk, ck, g.name, adapter))
            except GeneShapeError as e:
                raise GeneShapeError(f"{e} {nearest_pairs(run, g, pk, ck)}") from e
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
        """Run the reference engine on the example batch, and the one-pass engine against it where the dry run chose it.

        A model that the reference cannot run fails here, with the reason, instead of in the first training step. The
        one pass is kept only where one training step of it, on the example batch, gives the reference's outputs, the
        gradients of every trainable parameter and the child's BatchNorm statistics (``compare_engines``); otherwise
        this logs the first difference and every step runs the reference."""
        self._check_mix_reaches_output(self._reference_without_gradients(parent, child, args))
        if not self.one_pass:
            return
        why = self.compare_engines(parent, child, args)
        # last, without gradients: a model that keeps tensors of its last forward (torchvision RAFT's correlation
        # pyramid) must not keep a graph, or a copy of the model (export) fails
        self._reference_without_gradients(parent, child, args)
        if why:
            self.one_pass = False
            log.warning(
                "genes %s: the one-pass engine (one parent pass, the child's two paths in one forward) does not reproduce "
                "the separate-pass reference on a training step of the example batch: %s; every step runs the reference "
                "instead (correct, about one parent and one child-stem pass slower)",
                [g.name for g in self.genes],
                why,
            )

    def _reference_without_gradients(self, parent: nn.Module, child: nn.Module, args: tuple[Any, ...]) -> Inherited:
        with self.rehearsal(child):
            try:
                return SeparatePasses(self, parent, child, args).run()
            except RuntimeError as e:
                raise GeneShapeError(f"an inheritance pass with genes {[g.name for g in self.genes]} failed: {e}") from e

    def compare_engines(self, parent: nn.Module, child: nn.Module, args: tuple[Any, ...]) -> str | None:
        """Why the one-pass engine differs from the reference on one training step of ``args`` (``None``: it agrees).

        Each engine runs in training mode with gradients from the same state: outputs, the gradients of a loss that
        reads every output (child, adapters and Genetic Attention parameters) and the child's buffers after the step
        (BatchNorm statistics) are compared; dropout is off (the two engines draw their masks differently). Every
        buffer is restored afterwards and no gradient is left behind: the run starts as if this never happened."""
        trainable = [p for p in (*child.parameters(), *self.parameters()) if p.requires_grad]
        start = {m: {n: b.clone() for n, b in m.named_buffers()} for m in (child, self)}
        results, why = {}, None
        try:
            with self.rehearsal(child, train=True):
                # the reference last: a model that keeps tensors of its last forward then holds the reference's
                for engine in (OnePass, SeparatePasses):
                    for m, buffers in start.items():
                        restore(m, buffers)
                    try:
                        out = engine(self, parent, child, args).run()
                    except RuntimeError as e:  # e.g. vmap refuses data-dependent control flow after a gene
                        why = f"it failed ({str(e).splitlines()[0]})"
                        continue
                    why = why or kept_from_forward(child) or kept_from_forward(parent)
                    probe = sum(t.float().square().mean() for t in _floats(out))
                    grads = torch.autograd.grad(probe, trainable, allow_unused=True)
                    grads = [torch.zeros_like(p) if g is None else g for p, g in zip(trainable, grads)]
                    results[engine] = (detached_all(out), grads, {n: b.clone() for n, b in child.named_buffers()})
        finally:
            for m, buffers in start.items():
                restore(m, buffers)
        if why:
            return why
        (out, grads, bufs), (ref_out, ref_grads, ref_bufs) = results[OnePass], results[SeparatePasses]
        return (
            disagreement(out, ref_out)
            or differs(grads, ref_grads, "gradients")
            or next((f"buffer {n}: {d}" for n in ref_bufs if (d := differs(bufs[n], ref_bufs[n], "after the step"))), None)
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
    def rehearsal(self, child: nn.Module, train: bool = False) -> Iterator[None]:
        """For passes on the example batch outside training: eval mode without gradients (``train=True``: training
        mode with gradients and dropout off), then the modes restored and the gates cleared (a rehearsal must not show
        up in the logged gates)."""
        modes = [(m, m.training) for m in (*self.modules(), *child.modules())]
        self.train(train)
        child.train(train)
        for m in child.modules():
            if isinstance(m, _DropoutNd) or type(m).__name__ in DROP_MODULES:
                m.eval()
        try:
            with torch.set_grad_enabled(train):
                yield
        finally:
            for m, mode in modes:
                m.training = mode
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
        args = as_args(x)
        device = next(t.device.type for t in torch.utils._pytree.tree_leaves(args) if isinstance(t, Tensor))
        mixed = torch.is_autocast_enabled(device)
        if mixed and self.one_pass and not self._said_mixed:
            self._said_mixed = True
            log.info(
                "mixed precision is on: torch.func.vmap does not apply autocast to the ops of a forward that carries two "
                "paths (pytorch/pytorch#192617), so every step runs the separate-pass reference engine"
            )
        engine = OnePass if self.one_pass and not mixed else SeparatePasses
        return engine(self, parent, child, args).run()


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


def _floats(out: Inherited) -> list[Tensor]:
    leaves = torch.utils._pytree.tree_leaves([getattr(out, f.name) for f in fields(Inherited)])
    return [t for t in leaves if isinstance(t, Tensor) and t.is_floating_point()]


def detached_all(out: Inherited) -> Inherited:
    return Inherited(*(detached(getattr(out, f.name)) for f in fields(Inherited)))


def restore(module: nn.Module, buffers: dict[str, Tensor]) -> None:
    with torch.no_grad():
        for name, b in module.named_buffers():
            b.copy_(buffers[name])


def nearest_pairs(run: Any, gene: Gene, pk: FeatureKind, ck: FeatureKind) -> str:
    """The outermost module nearest to each side of ``gene`` (in the order modules finished) whose output would pair
    with the other side's feature: a vector or 1x1 map for a vector, a map or tokens for a map or tokens."""

    def pairs(shape: tuple[int, ...] | None, other: FeatureKind) -> bool:
        if shape is None or len(shape) < 2:
            return False
        pooled = len(shape) == 2 or (len(shape) == 4 and shape[2:] == (1, 1))
        return pooled if other.layout == "vector" else len(shape) in (3, 4) and not pooled

    found = []
    for role, path, other in (("child", gene.child, pk), ("parent", gene.parent, ck)):
        shapes = run.traces[role].shapes
        order = list(shapes)
        at = order.index(path)
        near = sorted((n.count("."), abs(k - at), n) for k, n in enumerate(order) if n and pairs(shapes[n], other))
        if near:
            name = near[0][2]
            found.append(f"{role} {name!r} (B, {', '.join(map(str, shapes[name][1:]))})")
    return f"Nearest module that would pair: {' or '.join(found)}." if found else ""


def kept_from_forward(model: nn.Module) -> str | None:
    """Why ``model`` cannot run as two paths in one forward because it keeps a tensor of its forward on a module (a
    cache of its last forward, as torchvision RAFT's correlation pyramid): such a tensor carries both paths, and
    nothing can read it once the forward is over. ``None`` when no module keeps one."""
    for name, m in model.named_modules():
        for attr, value in vars(m).items():
            leaves = torch.utils._pytree.tree_leaves(value) if isinstance(value, (list, tuple)) else [value]
            if any(isinstance(t, Tensor) and torch._C._functorch.is_functorch_wrapped_tensor(t) for t in leaves):
                return (
                    f"module {name or type(model).__name__!r} keeps a tensor of its forward (attribute {attr!r}), which "
                    "would hold both paths after the forward"
                )
    return None
