"""A gene: one block of the parent whose output the child inherits at one of its own blocks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Gene:
    """Pair of dotted module paths: ``parent`` block -> ``child`` block (same path when omitted)."""

    parent: str
    child: str

    @property
    def name(self) -> str:
        return self.parent if self.parent == self.child else f"{self.parent}->{self.child}"

    @classmethod
    def parse(cls, spec: Any) -> "Gene":
        """Accept ``"layer3"``, ``"layer3:layer3.2"``, ``{"parent": ..., "child": ...}`` or a ``Gene``."""
        if isinstance(spec, Gene):
            return spec
        if isinstance(spec, str):
            parent, _, child = spec.partition(":")
            return cls(parent, child or parent)
        if isinstance(spec, dict) and set(spec) <= {"parent", "child"} and "parent" in spec:
            return cls(spec["parent"], spec.get("child", spec["parent"]))
        raise ValueError(
            f"cannot read gene {spec!r}: write a module path ('avgpool'), 'parent_path:child_path', "
            "or {parent: PATH, child: PATH}"
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
