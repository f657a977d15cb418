"""Which blocks to pair: every module of a model with the kind and shape of its output, from one dry run, and a
proposed set of genes for a parent and a child (``hkt genes``).

The proposal pairs *stage ends* by relative depth: in firing order, the spatial outputs are grouped by grid and
width, and each group ends at its shallowest, last-firing module (``layer3`` of a ResNet); an isotropic group (a
ViT's blocks) offers each of its repeated units (``blocks.0`` ... ``blocks.3``). The child's and the parent's
candidates are taken evenly from the deep end, as many as the shorter list has, and paired in order; the pooled
vectors before the heads pair too. It is a starting point to paste and edit, not a search.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from hkt.core.extract import as_args, hooks, naming_failures
from hkt.core.kinds import FeatureKind, GeneShapeError, Hint, infer_kind, input_size, model_hint
from hkt.core.outputs import read


@dataclass
class Block:
    """One module's output in the dry run: its kind (``None`` when it cannot be known, with the reason)."""

    path: str
    shape: tuple[int, ...] | None
    kind: FeatureKind | None
    note: str = ""

    @property
    def depth(self) -> int:
        return self.path.count(".")

    def describe(self) -> str:
        if self.kind is not None:
            return self.kind.describe()
        return f"{self.shape} ({self.note})" if self.shape is not None else self.note


def survey(model: nn.Module, example_input: Any, role: str) -> tuple[list[Block], tuple[int, ...]]:
    """Every module of ``model`` that ran on ``example_input``, in firing order (first call), with its kind; and
    the shape of the model's output (its logits)."""
    args, size, hint = as_args(example_input), input_size(example_input), model_hint(model)
    outputs: dict[str, Any] = {}

    def keep(path: str):
        def hook(_m: nn.Module, _a: Any, out: Any) -> None:  # returns None: the output is only read
            outputs.setdefault(path, out)

        return hook

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), hooks(model, {p: keep(p) for p, _ in model.named_modules() if p}, role), naming_failures(model, role, size):
            final = read(model(*args), None, f"{role} output")
    finally:
        model.train(was_training)
    blocks = []
    for path, out in outputs.items():
        try:
            t = read(out, None, path)
        except GeneShapeError:
            blocks.append(Block(path, None, None, f"no tensor output ({type(out).__name__})"))
            continue
        try:
            blocks.append(Block(path, tuple(t.shape), infer_kind(t, role, path, size, Hint(), hint)))
        except GeneShapeError as e:
            blocks.append(Block(path, tuple(t.shape), None, str(e).split(": ", 1)[-1].split("; ")[0]))
    return blocks, tuple(final.shape)


def _candidates(blocks: list[Block], output_shape: tuple[int, ...]) -> tuple[list[Block], Block | None]:
    """Stage ends (spatial, firing order), or the repeated units of an isotropic model, and the pooled vector (the
    first vector after the last map or tokens).

    Units are the numbered children of a Sequential / ModuleList (``layer2.3``, ``blocks.5``, ``vit.layers.7``); in
    firing order they are grouped by grid and width. One group (a ViT): each unit of its shallowest level. Several
    groups (a CNN): each group's last unit at its shallowest level, named by its container when the unit ends it
    (``layer2`` rather than ``layer2.8``)."""
    blocks = [b for b in blocks if b.kind is not None]
    by_path = {b.path: b for b in blocks}

    def named(b: Block) -> Block:  # a block that ends its container is named by the container (layer2, not layer2.8)
        container = by_path.get(b.path.rpartition(".")[0])
        return container if container is not None and container.kind == b.kind else b

    spatial = [b for b in blocks if b.kind.spatial and b.kind.grid != (1, 1)]
    units = [b for b in spatial if b.path.rpartition(".")[2].isdigit()] or spatial
    groups: list[list[Block]] = []
    for b in units:
        if groups and (groups[-1][0].kind.grid, groups[-1][0].kind.channels) == (b.kind.grid, b.kind.channels):
            groups[-1].append(b)
        else:
            groups.append([b])
    ends: list[Block] = []
    for g in groups:
        top = [b for b in g if b.depth == min(x.depth for x in g)]
        if len(groups) == 1:
            ends = top
            break
        ends.append(named(top[-1]))
    # the pooled feature: the first vector after the last map or tokens (not the logits)
    last = max((i for i, b in enumerate(blocks) if b.kind.spatial), default=-1)
    vectors = [b for b in blocks[last + 1 :] if b.kind.layout == "vector" and b.shape != output_shape]
    return ends, (named(vectors[0]) if vectors else None)


def _spread(items: list[Block], n: int) -> list[Block]:
    """``n`` of ``items`` evenly spaced, ending with the deepest."""
    return [items[round((k + 1) * len(items) / n) - 1] for k in range(n)]


def propose(
    parent: list[Block], child: list[Block], parent_out: tuple[int, ...], child_out: tuple[int, ...], max_stages: int = 3
) -> list[tuple[Block, Block]]:
    """Gene pairs ``(parent block, child block)``: stage ends by relative depth, then the pooled vectors."""
    (p_ends, p_vec), (c_ends, c_vec) = _candidates(parent, parent_out), _candidates(child, child_out)
    n = min(len(p_ends), len(c_ends), max_stages)
    pairs = list(zip(_spread(p_ends, n), _spread(c_ends, n))) if n else []
    if p_vec is not None and c_vec is not None:
        pairs.append((p_vec, c_vec))
    return pairs
