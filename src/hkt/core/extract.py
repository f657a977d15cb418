"""Extraction (E): read activations of named blocks with forward hooks, without touching the model."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from hkt.core.gene import Gene
from hkt.core.kinds import FeatureKind, GeneShapeError, infer_kind, input_size, model_hint
from hkt.core.outputs import read
from hkt.core.paths import module_at

Hook = Callable[[nn.Module, Any, Any], Any]


Reader = Callable[[nn.Module, str, str, Hook, list[RemovableHandle]], None]
# how to hook a path ``<block>@<reader>`` that reads something other than the block's output: a feature method that
# needs one registers it by its suffix (``hkt.methods.reviewkd``: ``@preact``, a block's pre-activation); called with
# (block, path, role, hook, handles) and appends the handles it registers
READERS: dict[str, Reader] = {}


@contextmanager
def hooks(model: nn.Module, hooks_by_path: dict[str, Hook], role: str = "model") -> Iterator[None]:
    """Register forward hooks by module path for the duration of a ``with`` block, then remove them.

    A hook that returns a value replaces the module's output (this is how Mixture injects). A path
    ``<block>@<reader>`` (``layer3@preact``) hands its hook what that registered reader reads instead (``READERS``);
    for extraction only.
    """
    handles: list[RemovableHandle] = []
    try:
        for path, hook in hooks_by_path.items():
            block, at, reader = path.partition("@")
            if not at:
                handles.append(module_at(model, path, role).register_forward_hook(hook))
            elif "@" + reader in READERS:
                READERS["@" + reader](module_at(model, block, role), path, role, hook, handles)
            else:
                raise GeneShapeError(
                    f"{role} path {path!r}: no reader '@{reader}' (known: {', '.join(READERS) or 'none'}); name a module path"
                )
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def extracting(model: nn.Module, genes: Sequence[Gene], role: str) -> Iterator[dict[str, Tensor]]:
    """Collect ``role``'s (``parent`` / ``child``) gene features during forward passes inside the block:
    ``{path: tensor}``, the gene's element of a block output that is no tensor (its first tensor by default)."""
    store: dict[str, Tensor] = {}

    def make(gene: Gene) -> Hook:
        path, element = gene.path(role), gene.element(role)

        def hook(_m: nn.Module, _inp: Any, out: Any) -> None:
            store[path] = read(out, element, f"{role} block {path!r}")

        return hook

    with hooks(model, {g.path(role): make(g) for g in genes}, role):
        yield store


def as_args(x: Any) -> tuple[Any, ...]:
    """A model input as positional arguments: a tuple/list is spread, anything else is one argument."""
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


@dataclass
class Trace:
    """One network's dry run: gene features (first call, in the order the genes fired), call counts, and the output
    shape of every module's first call, in the order the modules finished (a tensor output, else ``None``)."""

    feats: dict[str, Tensor]
    calls: Counter[str]
    shapes: dict[str, tuple[int, ...] | None]


def trace_blocks(model: nn.Module, genes: Sequence[Gene], args: tuple[Any, ...], role: str) -> Trace:
    """Run ``model`` once and trace it (:class:`Trace`): gene features, how many times each block ran (a recurrent
    block, e.g. RAFT's update GRU, runs once per iteration) and every module's output shape.

    Raises ``GeneShapeError`` for a block that never runs or whose output has no tensor at the gene's element.
    """
    store: dict[str, Tensor] = {}
    calls: Counter[str] = Counter()

    def make(gene: Gene) -> Hook:
        path = gene.path(role)

        def hook(_m: nn.Module, _inp: Any, out: Any) -> None:
            if path not in store:
                store[path] = read(out, gene.element(role), f"{role} block {path!r} (gene {gene.name!r})")
            calls[path] += 1

        return hook

    shapes: dict[str, tuple[int, ...] | None] = {}  # every module that finished a call, in order

    def seen_hook(m: nn.Module, _inp: Any, out: Any) -> None:
        shapes.setdefault(names[m], tuple(out.shape) if isinstance(out, Tensor) else None)

    names = {m: n for n, m in model.named_modules()}
    seen = [m.register_forward_hook(seen_hook, prepend=True) for m in model.modules()]
    try:
        with hooks(model, {g.path(role): make(g) for g in genes}, role), naming_failures(model, role, input_size(args)):
            model(*args)
    finally:
        for h in seen:
            h.remove()
    missing = [g.path(role) for g in genes if g.path(role) not in store]
    if missing:
        tops = [n for n in shapes if n and "." not in n]  # the top-level blocks, in the order they ran
        raise GeneShapeError(
            f"{role} block(s) {missing} never ran during a forward pass; choose blocks on the forward path (top-level "
            f"modules that ran: {', '.join(tops[:20])}{' …' if len(tops) > 20 else ''}; `hkt genes` lists them all)"
        )
    return Trace(store, calls, shapes)


class DryRunError(RuntimeError):
    """A model failed its dry run; the message names the module that was running."""


@contextmanager
def naming_failures(model: nn.Module, role: str, size: tuple[int, int] | None) -> Iterator[None]:
    """While active, a failure inside ``model``'s forward (someone else's code: any exception) becomes one
    ``DryRunError`` naming the innermost module that was running, with the fix where one is known."""
    running: list[str] = []

    def enter(path: str):
        return lambda _m, _a: running.append(path)

    def leave(_m: nn.Module, _a: Any, _out: Any) -> None:  # returns None: the output is not touched
        running.pop()

    handles = []
    for path, module in model.named_modules():
        if path:
            handles += [module.register_forward_pre_hook(enter(path)), module.register_forward_hook(leave)]
    try:
        yield
    except Exception as e:  # noqa: BLE001 (any failure of someone else's model is reported with where it happened)
        if isinstance(e, (GeneShapeError, DryRunError)):
            raise
        where = f"in module {running[-1]!r} ({type(model.get_submodule(running[-1])).__name__})" if running else "before any module ran"
        fix = ""
        if size and any("embed" in path for path in running):  # a transformer's patch grid is fixed when it is built
            fix = (
                "; a transformer's patch grid and position embeddings are sized when it is built: build it for this input "
                f"({size[0]}x{size[1]}: timm option img_size, Hugging Face option image_size) or give it inputs of its size"
            )
        raise DryRunError(
            f"{role} ({type(model).__name__}) failed its dry run {where}: {type(e).__name__}: {str(e).rstrip('.')}{fix}"
        ) from e  # the user's traceback stays the cause (hkt ... --debug shows it)
    finally:
        for h in handles:
            h.remove()


@dataclass
class DryRun:
    """Gene features (first call, firing order), their kinds and call counts of both networks on one example batch."""

    parent: dict[str, Tensor]
    child: dict[str, Tensor]
    parent_calls: Counter[str]
    child_calls: Counter[str]
    parent_kinds: dict[str, FeatureKind]
    child_kinds: dict[str, FeatureKind]
    traces: dict[str, Trace]  # per role

    def kinds(self, role: str) -> dict[str, FeatureKind]:
        return self.parent_kinds if role == "parent" else self.child_kinds


def dry_run(parent: nn.Module, child: nn.Module, genes: Sequence[Gene], example_input: Any) -> DryRun:
    """One eval-mode, no-grad pass of both networks on ``example_input``, used to size adapters and to read the
    kind of every gene feature (``hkt.core.kinds``)."""
    args = as_args(example_input)
    size = input_size(args)
    was_training = child.training
    parent.eval()
    child.eval()
    try:
        with torch.no_grad():
            traces = {"parent": trace_blocks(parent, genes, args, "parent"), "child": trace_blocks(child, genes, args, "child")}
            (p, p_calls), (c, c_calls) = ((t.feats, t.calls) for t in traces.values())
    finally:
        child.train(was_training)
    kinds: dict[str, dict[str, FeatureKind]] = {"parent": {}, "child": {}}
    for role, model, feats in (("parent", parent, p), ("child", child, c)):
        hint = model_hint(model)
        for g in genes:
            try:
                kinds[role][g.path(role)] = infer_kind(feats[g.path(role)], role, g.path(role), size, g.hint(role), hint)
            except GeneShapeError as e:
                shapes = f"parent {tuple(p[g.parent].shape)}, child {tuple(c[g.child].shape)}"
                raise GeneShapeError(f"gene {g.name!r} ({shapes}): {e}") from e
    return DryRun(p, c, p_calls, c_calls, kinds["parent"], kinds["child"], traces)
