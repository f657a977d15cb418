"""A gene: one block of the parent whose output the child inherits at one of its own blocks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hkt.core.kinds import Hint
from hkt.core.outputs import Element

SIDE_KEYS = ("layout", "prefix_tokens", "element")  # per side as parent_<key> / child_<key>, or <key> for both


@dataclass(frozen=True)
class Gene:
    """Pair of dotted module paths: ``parent`` block -> ``child`` block (same path when omitted).

    ``parent_hint`` / ``child_hint``: the declared feature kind of each side (``hkt.core.kinds``);
    ``parent_element`` / ``child_element``: which element of a block output that is no tensor carries the feature
    (``None``: its first tensor, e.g. a Hugging Face layer's ``hidden_states``)."""

    parent: str
    child: str
    parent_hint: Hint = field(default=Hint(), compare=False)
    child_hint: Hint = field(default=Hint(), compare=False)
    parent_element: Element = None
    child_element: Element = None

    @property
    def name(self) -> str:
        return self.parent if self.parent == self.child else f"{self.parent}->{self.child}"

    def hint(self, role: str) -> Hint:
        return self.parent_hint if role == "parent" else self.child_hint

    def element(self, role: str) -> Element:
        return self.parent_element if role == "parent" else self.child_element

    def path(self, role: str) -> str:
        return self.parent if role == "parent" else self.child

    @classmethod
    def parse(cls, spec: Any) -> Gene:
        """Accept ``"layer3"``, ``"layer3:layer3.2"``, ``{"parent": ..., "child": ...}`` or a ``Gene``.

        A dict may also declare each side's feature: ``layout`` (``vector | nchw | nhwc | tokens``), ``prefix_tokens``
        and ``element``, for both sides or per side as ``parent_layout``, ``child_prefix_tokens``, ``child_element``..."""
        if isinstance(spec, Gene):
            return spec
        if isinstance(spec, str):
            parent, _, child = spec.partition(":")
            return cls(parent, child or parent)
        allowed = {"parent", "child", *SIDE_KEYS, *(f"{r}_{k}" for r in ("parent", "child") for k in SIDE_KEYS)}
        if isinstance(spec, dict) and set(spec) <= allowed and isinstance(spec.get("parent"), str):
            side = {r: {k: spec.get(f"{r}_{k}", spec.get(k)) for k in SIDE_KEYS} for r in ("parent", "child")}
            return cls(
                spec["parent"],
                spec.get("child", spec["parent"]),
                Hint(side["parent"]["layout"], side["parent"]["prefix_tokens"]),
                Hint(side["child"]["layout"], side["child"]["prefix_tokens"]),
                side["parent"]["element"],
                side["child"]["element"],
            )
        extra = sorted(set(spec) - allowed) if isinstance(spec, dict) else []
        raise ValueError(
            f"cannot read gene {spec!r}"
            + (f" (unknown key(s) {extra}; gene keys: {sorted(allowed)})" if extra else "")
            + ": write a module path ('avgpool'), 'parent_path:child_path', or {parent: PATH, child: PATH}"
        )


def parse_genes(specs: Any) -> list[Gene]:
    """Parse a gene spec or a list of them; rejects an empty list and duplicate genes."""
    if isinstance(specs, (str, dict, Gene)):
        specs = [specs]
    genes = [Gene.parse(s) for s in specs]
    if not genes:
        raise ValueError("at least one gene is needed, e.g. genes: [avgpool]")
    for role in ("parent", "child"):
        paths = [getattr(g, role) for g in genes]
        dup = {p for p in paths if paths.count(p) > 1}
        if dup:
            raise ValueError(f"{role} block(s) {sorted(dup)} appear in more than one gene; each block carries one gene")
    return genes
