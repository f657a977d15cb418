"""The method itself: genes, Extraction, Transfer, Mixture (Genetic Attention) and the ETM engine."""

from hkt.core.gene import Gene, parse_genes
from hkt.core.genetic_attention import (
    ATTENTIONS,
    GatedAttention,
    GeneticAttention,
    LearnedAttention,
    StaticAttention,
    build_attention,
    gated_attention,
    learned_attention,
    static_attention,
)
from hkt.core.inheritance import Inheritance, Inherited
from hkt.core.paths import module_at
from hkt.core.transfer import GeneShapeError, build_adapter

__all__ = [
    "ATTENTIONS",
    "GatedAttention",
    "Gene",
    "GeneShapeError",
    "GeneticAttention",
    "Inheritance",
    "Inherited",
    "LearnedAttention",
    "StaticAttention",
    "build_adapter",
    "build_attention",
    "gated_attention",
    "learned_attention",
    "module_at",
    "parse_genes",
    "static_attention",
]
