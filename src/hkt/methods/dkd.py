"""``dkd``: Decoupled Knowledge Distillation (Zhao et al., CVPR 2022) — ``task + w(t) * (alpha * TCKD + beta * NCKD)``.

TCKD is the KL divergence of the binary (target class, all others) distributions; NCKD the KL divergence among the
non-target classes (the target logit masked out by subtracting 1000 before the softmax), both at temperature T
and times T², summed over classes and averaged over samples (per pixel for segmentation). ``w(t)`` warms up
linearly, ``min(epoch / warmup, 1)``. Defaults as mdistiller (``mdistiller/distillers/DKD.py``; ``configs/cifar100/
dkd/res56_res20.yaml``: alpha 1, beta 2, T 4, warm-up 20 epochs, CE weight 1).

beta is set per pair in the authors' configs (mdistiller ``configs/cifar100/dkd/*.yaml``):

| pairs | beta |
|---|---|
| most, e.g. res32x4 -> res8x4, res32x4 -> ShuffleNet, res50 -> MobileNetV2 (the ``cfg.py`` default) | 8 |
| VGG and WRN pairs, e.g. vgg13 -> vgg8, wrn40_2 -> wrn16_2 | 6 |
| res56 -> res20 and res110 -> res32 only | 2 |

Our default (2) is the res56 -> res20 pair of our CIFAR grids; set ``beta`` for another pair, or search it.
``logit_standardize: true`` z-scores the logits and, for the options left unset, takes the authors' recipe: T 2,
alpha and beta x 9 (logit-standardization-KD multiplies DKD's weights by ``--kd-weight 9``); values are logged.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hkt.losses import as_rows, standardized
from hkt.methods.base import Method, TaskLoss, WarmedUp, WarmupUnit, logit_recipe


def dkd_loss(student: Tensor, teacher: Tensor, target: Tensor, alpha: float = 1.0, beta: float = 2.0, temperature: float = 4.0) -> Tensor:
    """``alpha * TCKD + beta * NCKD`` for logits ``(N, K)`` and targets ``(N,)``."""
    t = temperature
    gt = F.one_hot(target, student.shape[1]).bool()
    p_s, p_t = F.softmax(student / t, 1), F.softmax(teacher / t, 1)
    # binary distributions (target, non-target)
    b_s = torch.stack([(p_s * gt).sum(1), (p_s * ~gt).sum(1)], 1)
    b_t = torch.stack([(p_t * gt).sum(1), (p_t * ~gt).sum(1)], 1)
    tckd = F.kl_div(torch.log(b_s), b_t, reduction="sum") * t * t / student.shape[0]
    nckd = (
        F.kl_div(F.log_softmax(student / t - 1000.0 * gt, 1), F.softmax(teacher / t - 1000.0 * gt, 1), reduction="sum")
        * t
        * t
        / student.shape[0]
    )
    return alpha * tckd + beta * nckd


class DKD(WarmedUp, Method):
    """Decoupled KD (the module docstring gives the formula, the per-pair beta table and the sources).

    Args:
        alpha: TCKD weight (default 1; 9 with ``logit_standardize``).
        beta: NCKD weight (default 2, the res56 -> res20 pair; 18 with ``logit_standardize``).
        temperature: T (default 4; 2 with ``logit_standardize``).
        task_weight: weight of the task loss.
        warmup: length of the linear warm-up of the distillation terms, in ``warmup_unit`` (20 epochs of 240).
        warmup_unit: ``epochs`` (the authors') or ``steps``.
        logit_standardize: z-score the logits before the temperature.
    """

    needs_logits = True
    warm_name = "dkd"

    def __init__(
        self,
        child: nn.Module,
        parent: nn.Module,
        alpha: float | None = None,
        beta: float | None = None,
        temperature: float | None = None,
        task_weight: float = 1.0,
        warmup: float = 20.0,
        warmup_unit: WarmupUnit = "epochs",
        logit_standardize: bool = False,
        task_loss: TaskLoss = F.cross_entropy,
    ) -> None:
        super().__init__(child, parent, task_loss)
        v = logit_recipe(
            "dkd",
            logit_standardize,
            {"alpha": alpha, "beta": beta, "temperature": temperature},
            plain={"alpha": 1.0, "beta": 2.0, "temperature": 4.0},
            recipe={"alpha": 9.0, "beta": 18.0, "temperature": 2.0},
        )
        self.alpha, self.beta, self.temperature, self.task_weight = v["alpha"], v["beta"], v["temperature"], task_weight
        self.warmup, self.warmup_unit, self.logit_standardize = warmup, warmup_unit, logit_standardize

    def forward_train(self, x: Any, y: Any) -> tuple[Any, dict[str, Tensor]]:
        teacher, _ = self.read_parent(x)
        out = self.child(x)
        s, t = standardized(self.logit_standardize, out, teacher)
        # DKD splits the logits at the target class: with mixed or smoothed targets (B, K), the class of largest weight
        (s, target), (t, _) = as_rows(s, y if y.dim() != out.dim() else y.argmax(1)), as_rows(t)
        return out, {
            "task": self.task_weight * self.task_loss(out, y),
            "dkd": self.warm * dkd_loss(s, t, target, self.alpha, self.beta, self.temperature),
        }
