"""``deit``: DeiT's distillation through attention (Touvron et al., ICML 2021), as ``facebookresearch/deit``
``losses.py`` (``DistillationLoss``) computes it:

    loss = (1 - alpha) * task(class logits, y) + alpha * distillation(distillation logits, parent logits)

with ``distillation`` either **hard**, ``CE(distillation logits, argmax(parent logits))`` (the authors' best
recipe, ``--distillation-type hard``), or **soft**, ``KL(softmax(parent / tau) || softmax(dist / tau)) * tau^2``
summed and divided by the distillation logits' element count (``outputs_kd.numel()``: the authors' normalisation,
which is the batch-mean KL divided by the class count). Defaults as the authors' ``main.py``: ``alpha`` 0.5,
``tau`` 1.0, ``hard``.

**Which logits.** A child with a distillation token (timm's ``*_distilled_*`` models: ``head`` on the class token,
``head_dist`` on the distillation token) is trained as DeiT trains it: the task term reads ``head``'s output and
the distillation term ``head_dist``'s (both read by forward hooks during the child's one forward); the child's own
forward (what ``hkt`` evaluates and exports) returns ``(head + head_dist) / 2``, as timm and DeiT deploy it. Any
other child (no ``head_dist``) gets both terms on its class logits: DeiT's "hard distillation" without a token
(its Table 3, "usual distillation" rows).
"""

from __future__ import annotations

from typing import Any, Literal

import torch.nn.functional as F
from torch import Tensor, nn

from hkt.losses import as_rows
from hkt.methods.base import Method, TaskLoss

SOURCE = "Touvron et al., ICML 2021; facebookresearch/deit losses.py (DistillationLoss), main.py defaults alpha 0.5, tau 1, hard"


def deit_distillation(student: Tensor, teacher: Tensor, distillation: str, tau: float) -> Tensor:
    """DeiT's distillation term for logits ``(N, K)``: hard, ``CE(student, argmax teacher)``; soft, the summed
    ``KL(teacher^tau || student^tau) * tau^2 / (N * K)``."""
    if distillation == "hard":
        return F.cross_entropy(student, teacher.argmax(1))
    kl = F.kl_div(F.log_softmax(student / tau, 1), F.log_softmax(teacher / tau, 1), reduction="sum", log_target=True)
    return kl * tau * tau / student.numel()


def distillation_head(child: nn.Module) -> tuple[nn.Module, nn.Module] | None:
    """``(head, head_dist)`` of a child with a distillation token (timm ``VisionTransformerDistilled``), else ``None``."""
    head, head_dist = getattr(child, "head", None), getattr(child, "head_dist", None)
    return (head, head_dist) if isinstance(head, nn.Module) and isinstance(head_dist, nn.Module) else None


class DeiT(Method):
    """DeiT distillation (the module docstring gives the formula, the heads it reads and the source).

    Deployed child: its own forward, unchanged; for a child with a distillation token that is timm's
    ``(head + head_dist) / 2``, the two heads averaged as DeiT deploys them.

    Args:
        alpha: weight of the distillation term; the task term gets ``1 - alpha`` (default 0.5).
        distillation: ``hard`` (CE against the parent's argmax, default) or ``soft`` (KL at ``tau``).
        tau: temperature of the soft variant (default 1.0; unused by ``hard``).
    """

    needs_logits = True

    def __init__(
        self,
        child: nn.Module,
        parent: nn.Module,
        alpha: float = 0.5,
        distillation: Literal["hard", "soft"] = "hard",
        tau: float = 1.0,
        task_loss: TaskLoss = F.cross_entropy,
    ) -> None:
        super().__init__(child, parent, task_loss)
        if distillation not in ("hard", "soft"):
            raise ValueError(f"method 'deit': distillation must be 'hard' or 'soft', got {distillation!r}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"method 'deit': alpha weighs the two terms as (1 - alpha, alpha) and must lie in [0, 1], got {alpha}")
        self.alpha, self.distillation, self.tau = float(alpha), distillation, float(tau)
        self.heads = distillation_head(self.child)
        self.reads = "head (task) and head_dist (distillation)" if self.heads else "the class logits (no distillation token)"

    def forward_train(self, x: Any, y: Any) -> tuple[Any, dict[str, Tensor]]:
        teacher, _ = self.read_parent(x)
        if self.heads is None:
            out = self.child(x)
            cls_logits = dist_logits = out
        else:
            seen: dict[str, Tensor] = {}
            hooks = [h.register_forward_hook(lambda m, i, o, k=k: seen.__setitem__(k, o)) for k, h in zip(("cls", "dist"), self.heads)]
            try:
                out = self.child(x)  # (head + head_dist) / 2: what ships
            finally:
                for hook in hooks:
                    hook.remove()
            cls_logits, dist_logits = seen["cls"], seen["dist"]
        (student, _), (parent, _) = as_rows(dist_logits), as_rows(teacher)
        return out, {
            "task": (1.0 - self.alpha) * self.task_loss(cls_logits, y),
            "deit": self.alpha * deit_distillation(student, parent, self.distillation, self.tau),
        }
