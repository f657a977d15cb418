"""``hkt``: Hereditary Knowledge Transfer.

``L = w_child * L(child(x), y) + w_inherit * L(child with inherited mixes, y)
      + w_parent * L(parent downstream on the child's mix, y) [+ kd_weight * KD(child, parent)]``

With one gene at the pooled feature and gated GA this is the reference code's objective
(``CE(head_c(f_c)) + CE(head_c(m)) + CE(head_p(m))``, ``m = f_c + lam (1 - s)(f_p - f_c)``).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hkt.core.gene import parse_genes
from hkt.core.genetic_attention import Attention
from hkt.core.inheritance import Inheritance
from hkt.core.transfer import Adapter
from hkt.losses import kd_loss, standardized
from hkt.methods.base import DistillLoss, Method, TaskLoss, logit_recipe
from hkt.replay import plan_replay, rehearse, replaying

LamSchedule = Literal["constant", "linear", "cosine"]


class HKT(Method):
    """Hereditary Knowledge Transfer: the child trained with genes inherited from the frozen parent (the module
    docstring gives the objective).

    Args:
        genes: module paths (``"avgpool"``, ``"layer1:layer1"``, ``{parent: ..., child: ...}``).
        example_input: one batch for the dry run that sizes the adapters.
        attention: GA variant, ``gated`` | ``static`` | ``learned`` | ``lepoket`` (the follow-up's
            learnable GA; ``lam`` is its λ's initial value).
        lam_schedule, lam_final: move the inheritance rate from ``lam`` to ``lam_final`` over training, per step
            (``linear`` or ``cosine``; ``constant`` = off): every gate is scaled by ``lam(t) / lam``.
        logit_standardize: z-score the logits before the temperature in the KD term (Sun et al., CVPR 2024); the KD
            options left unset then take the authors' recipe, T 2 and KD weight 9 (so the switch alone turns the KD
            term on); the values used are logged.
        adapter: Transfer, ``auto`` (identity where parent and child shapes agree, the reference) or ``learned``
            (always a trainable adapter, identity at step 0: channel k of the parent need not mean channel k of
            the child).
        w_child, w_inherit, w_parent: weights of the three task-loss terms (reference: 1, 1, 1).
        kd_weight, temperature: optional Hinton KD term on the child's logits (default 0 = off, T 4).
    """

    def __init__(
        self,
        child: nn.Module,
        parent: nn.Module,
        genes: Any,
        example_input: Any,
        attention: Attention = "gated",
        lam: float = 0.6,
        parent_weight: float = 0.7,
        w_child: float = 1.0,
        w_inherit: float = 1.0,
        w_parent: float = 1.0,
        kd_weight: float | None = None,
        temperature: float | None = None,
        adapter: Adapter = "auto",
        lam_schedule: LamSchedule = "constant",
        lam_final: float | None = None,
        logit_standardize: bool = False,
        task_loss: TaskLoss = F.cross_entropy,
        distill_loss: DistillLoss = kd_loss,
    ) -> None:
        super().__init__(child, parent, task_loss)
        if lam_schedule != "constant" and (lam_final is None or lam == 0):
            raise ValueError(
                f"method.lam_schedule: {lam_schedule} moves the inheritance rate from lam to lam_final: set method.lam_final "
                f"(e.g. lam_final: 0 to end on the child alone) and a non-zero lam (got lam={lam}, lam_final={lam_final})"
            )
        self.lam, self.lam_schedule, self.lam_final = lam, lam_schedule, lam_final
        self.logit_standardize = logit_standardize
        self.distill_loss = distill_loss
        self.w_child, self.w_inherit, self.w_parent = w_child, w_inherit, w_parent
        v = logit_recipe(
            "hkt",
            logit_standardize,
            {"kd_weight": kd_weight, "temperature": temperature},
            plain={"kd_weight": 0.0, "temperature": 4.0},
            recipe={"kd_weight": 9.0, "temperature": 2.0},
        )
        self.kd_weight, self.temperature = kd_weight, temperature = v["kd_weight"], v["temperature"]
        self.inheritance = Inheritance(
            parent,
            child,
            parse_genes(genes),
            example_input,
            attention,
            lam,
            parent_weight,
            native=w_child > 0 or kd_weight > 0,
            parent_on_mix=w_parent > 0,
            parent_own=kd_weight > 0,
            adapter=adapter,
        )
        self.genes = self.inheritance.genes
        self._replay = None  # set by parent_cache_plan

    def parent_cache_plan(self, example: Tensor) -> str | None:
        """The parent cache stores the parent's gene outputs; a cached step replays the parent's modules up to its
        last gene from them (``hkt.replay``) and computes the rest on the child's mix, as uncached."""
        if not self.inheritance.one_pass:
            return "the genes run several times per forward (the separate-pass engine)"
        plan = plan_replay(self.parent, self.genes, example)
        if isinstance(plan, str):
            return plan
        _, genes = self.read_parent(example, self.genes)  # what a cache holds: the parent's plain forward
        with self.inheritance.rehearsal(self.child):
            reason = rehearse(plan, self.parent, lambda: self.inheritance(self.parent, self.child, example), genes, example.shape[0])
        if reason is None:
            self._replay = plan
        return reason

    def forward_train(self, x: Any, y: Any) -> tuple[Any, dict[str, Tensor]]:
        if self.parent_cache is None:
            r = self.inheritance(self.parent, self.child, x)
        else:  # the parent's genes from the cache (or one plain parent pass that fills it), then replayed
            _, genes = self.read_parent(x, self.genes)
            with replaying(self.parent, self._replay, genes, x.shape[0]):
                r = self.inheritance(self.parent, self.child, x)
        losses: dict[str, Tensor] = {}
        if r.child is not None and self.w_child > 0:
            losses["child"] = self.w_child * self.task_loss(r.child, y)
        if self.w_inherit > 0:
            losses["inherit"] = self.w_inherit * self.task_loss(r.inherited, y)
        if self.w_parent > 0:
            losses["parent"] = self.w_parent * self.task_loss(r.parent_on_mix, y)
        if self.kd_weight > 0:
            s, t = standardized(self.logit_standardize, r.child, r.parent)
            losses["kd"] = self.kd_weight * self.distill_loss(s, t, self.temperature)
        return (r.child if r.child is not None else r.inherited), losses

    def on_train_step(self, step: int, total_steps: int, epoch: int) -> None:
        if self.lam_schedule == "constant":
            return
        t = min(1.0, step / max(1, total_steps - 1))
        shape = t if self.lam_schedule == "linear" else 0.5 * (1 - math.cos(math.pi * t))
        scale = (self.lam + (self.lam_final - self.lam) * shape) / self.lam
        for a in self.inheritance.attentions:
            a.scale = scale

    def log_values(self) -> dict[str, Tensor]:
        gates = {f"gate/{k}": v for k, v in self.inheritance.gates().items()}
        if self.lam_schedule != "constant":
            gates["lam/scale"] = torch.tensor(self.inheritance.attentions[0].scale)
        return gates
