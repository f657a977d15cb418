"""Genetic Attention (GA): the Mixture step that fuses a child feature with an inherited one.

Every variant is a pure function ``(q, v) -> (out, gate)`` wrapped in a small module.
``q`` is the child's native feature (the query), ``v`` the transferred parent feature (key = value).
Shapes: the mix form of ``hkt.core.kinds``, channels first: ``(B, C)`` for vectors, ``(B, C, H, W)`` for maps,
``(B, C, N)`` for tokens; ``out`` has the shape of ``q``.

``gate`` is the *inheritance rate*: the fraction of the way from ``q`` towards ``v`` that the output
moves, ``out = q + gate * (v - q)`` (per sample for vectors, per position for maps, per token for tokens; shape
``(B, 1[, H, W | N])``),
so gates of different variants are directly comparable in logs.
"""

from __future__ import annotations

import math
import typing
from typing import Literal

import torch
from torch import Tensor, nn


def gated_attention(q: Tensor, v: Tensor, lam: float = 0.6) -> tuple[Tensor, Tensor]:
    """Reference GA: ``s = sigmoid(<q, v> / sqrt(C))``, ``out = q + lam * (1 - s) * (v - q)``.

    The child inherits *more* where child and parent disagree (small dot product, small ``s``).
    Args: q, v: ``(B, C)`` or ``(B, C, H, W)``. Returns ``(out, gate)`` with gate ``(B, 1[, H, W])``.
    """
    s = torch.sigmoid((q * v).sum(dim=1, keepdim=True) / math.sqrt(q.shape[1]))
    gate = lam * (1.0 - s)
    return q + gate * (v - q), gate


def static_attention(q: Tensor, v: Tensor, parent_weight: float = 0.7) -> tuple[Tensor, Tensor]:
    """Fixed blend ``out = parent_weight * v + (1 - parent_weight) * q`` (reference: 0.7 / 0.3)."""
    gate = torch.full_like(q[:, :1], parent_weight)
    return parent_weight * v + (1.0 - parent_weight) * q, gate


def learned_attention(q: Tensor, v: Tensor, logits: Tensor, lam: float = 0.6) -> tuple[Tensor, Tensor]:
    """Learned GA: ``a = sigmoid(logits)``, ``out = q + lam * a * (v - q)``; ``logits`` is ``(B, 1[, H, W])``."""
    gate = lam * torch.sigmoid(logits)
    return q + gate * (v - q), gate


def lepoket_attention(q: Tensor, qk: Tensor, value: Tensor, mlp_gate: Tensor, lam: Tensor) -> tuple[Tensor, Tensor]:
    """Learnable GA (LePoKet): ``a = ½(sigmoid(<Q, K> / sqrt(d)) + sigmoid(MLP(Q ⊙ K)))``, ``out = q + λ a (V - q)``.

    Args: q ``(B, C[, H, W])``; qk = ``Q ⊙ K`` ``(B, d[, H, W])``; value = ``V = W_v v`` (shape of q); mlp_gate = the
    MLP's sigmoid output ``(B, 1[, H, W])``; lam = the learnable λ (a scalar tensor). The child inherits *more* where
    projected child and parent agree (large ``<Q, K>``), the opposite of the reference gate."""
    a = 0.5 * (torch.sigmoid(qk.sum(1, keepdim=True) / math.sqrt(qk.shape[1])) + mlp_gate)
    gate = lam * a
    return q + gate * (value - q), gate


class GeneticAttention(nn.Module):
    """Base class: ``forward(q, v) -> out`` and keeps the last gate in ``self.gate`` for logging.

    ``scale`` multiplies the inheritance rate (``out = q + scale * gate * (target - q)``): a gate schedule moves it
    from 1 to ``lam_final / lam`` over training (``lam_schedule``), e.g. to wean the child off the inherited path."""

    gate: Tensor | None = None
    scale: float = 1.0

    def mix(self, q: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def forward(self, q: Tensor, v: Tensor) -> Tensor:
        out, gate = self.mix(q, v)
        if self.scale != 1.0:
            out, gate = q + self.scale * (out - q), self.scale * gate
        self.gate = gate.detach()
        return out


class GatedAttention(GeneticAttention):
    def __init__(self, lam: float = 0.6) -> None:
        super().__init__()
        self.lam = lam

    def mix(self, q: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        return gated_attention(q, v, self.lam)


class StaticAttention(GeneticAttention):
    def __init__(self, parent_weight: float = 0.7) -> None:
        super().__init__()
        self.parent_weight = parent_weight

    def mix(self, q: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        return static_attention(q, v, self.parent_weight)


def pointwise(i: int, o: int, rank: int, bias: bool = True) -> nn.Module:
    """A per-position linear layer on the mix form of ``rank`` 2 (``Linear``), 3 (tokens: 1x1 ``Conv1d``) or 4 (maps:
    1x1 ``Conv2d``); the same parameters per position as a ``Linear``, so gates are per sample, token or position."""
    if rank not in (2, 3, 4):
        raise ValueError(f"a gene feature has rank 2 (vectors), 3 (tokens) or 4 (maps) in mix form, got {rank}")
    return {2: nn.Linear(i, o, bias=bias), 3: nn.Conv1d(i, o, 1, bias=bias), 4: nn.Conv2d(i, o, 1, bias=bias)}[rank]


class LearnedAttention(GeneticAttention):
    """Gate from a per-position linear layer on ``[q, v]`` (``rank``: of the mix form); starts at ``a = 0.5``."""

    def __init__(self, channels: int, rank: int, lam: float = 0.6) -> None:
        super().__init__()
        self.lam = lam
        self.score = pointwise(2 * channels, 1, rank)
        nn.init.zeros_(self.score.weight)
        nn.init.zeros_(self.score.bias)

    def mix(self, q: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        return learned_attention(q, v, self.score(torch.cat([q, v], dim=1)), self.lam)


class LePoKetAttention(GeneticAttention):
    """The follow-up's learnable GA (christian-tchenko/LePoKet, ``learnable_ga.py``): projections ``W_q``, ``W_k``,
    ``W_v`` (bias-free; linear for vectors and 1x1 convs for maps and tokens, so the gate is per position or token),
    a gate MLP ``d -> d -> 1`` (ReLU, sigmoid) on ``Q ⊙ K``, and a learnable λ; all five weights Kaiming-normal. Key = value = the
    transferred parent feature. Differences from the authors' code: λ starts at ``lam`` (they draw it from U(0, 1)),
    and maps and tokens are supported (their code takes vectors only)."""

    def __init__(self, channels: int, rank: int, lam: float = 0.6) -> None:
        super().__init__()

        def layer(i: int, o: int, bias: bool = False) -> nn.Module:
            return pointwise(i, o, rank, bias)

        self.w_q, self.w_k, self.w_v = layer(channels, channels), layer(channels, channels), layer(channels, channels)
        self.mlp = nn.Sequential(layer(channels, channels, True), nn.ReLU(), layer(channels, 1, True), nn.Sigmoid())
        # as the authors' resnet_lga.py, whose self.apply(_weights_init) after building the gate re-initialises all five
        # layers with kaiming_normal_ (fan-in, gain sqrt(2): std sqrt(2 / C)); biases keep PyTorch's default
        for w in (self.w_q, self.w_k, self.w_v, self.mlp[0], self.mlp[2]):
            nn.init.kaiming_normal_(w.weight)
        self.lam = nn.Parameter(torch.tensor(float(lam)))

    def mix(self, q: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        qk = self.w_q(q) * self.w_k(v)
        return lepoket_attention(q, qk, self.w_v(v), self.mlp(qk), self.lam)


Attention = Literal["gated", "static", "learned", "lepoket"]
ATTENTIONS: tuple[str, ...] = typing.get_args(Attention)


def build_attention(kind: str, channels: int, rank: int, lam: float = 0.6, parent_weight: float = 0.7) -> GeneticAttention:
    """Build a GA module by name (one of ``ATTENTIONS``) for a gene of ``channels`` channels whose mix form has
    ``rank`` dims (2 vectors, 3 tokens, 4 maps)."""
    if kind == "gated":
        return GatedAttention(lam)
    if kind == "static":
        return StaticAttention(parent_weight)
    if kind == "learned":
        return LearnedAttention(channels, rank, lam)
    if kind == "lepoket":
        return LePoKetAttention(channels, rank, lam)
    raise ValueError(f"unknown genetic attention {kind!r}; choose one of {', '.join(ATTENTIONS)}")
