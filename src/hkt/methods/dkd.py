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

from hkt.methods.base import WARMUP_UNITS, Method, TaskLoss, as_rows, logit_recipe, standardized, warmup_factor


def dkd_loss(student: Tensor, teacher: Tensor, target: Tensor, alpha: float = 1.0, beta: float = 2.0, temperature: float = 4.0) -> Tensor:
    """``alpha * TCKD + beta * NCKD`` for logits ``(N, K)`` and targets ``(N,)``."""
    t = temperature
    gt = F.one_hot(target, student.shape[1]).bool()
    p_s, p_t = F.softmax(student / t, 1), F.softmax(teacher / t, 1)
    # binary distributions (target, non-target)
    b_s = torch.stack([(p_s * gt).sum(1), (p_s * ~gt).sum(1)], 1)
    b_t = torch.stack([(p_t * gt).sum(1), (p_t * ~gt).sum(1)], 1)
    tckd = F.kl_div(torch.log(b_s), b_t, reduction="sum") * t * t / student.shape[0]
    nckd = F.kl_div(
        F.log_softmax(student / t - 1000.0 * gt, 1), F.softmax(teacher / t - 1000.0 * gt, 1), reduction="sum"
    ) * t * t / student.shape[0]
    return alpha * tckd + beta * nckd


class DKD(Method):
    def __init__(
        self,
        child: nn.Module,
        parent: nn.Module,
        alpha: float | None = None,
        beta: float | None = None,
        temperature: float | None = None,
        task_weight: float = 1.0,
        warmup: float = 20.0,
        warmup_unit: str = "epochs",
        logit_standardize: bool = False,
        task_loss: TaskLoss = F.cross_entropy,
    ) -> None:
        super().__init__(child, parent, task_loss)
        if warmup_unit not in WARMUP_UNITS:
            raise ValueError(f"method.warmup_unit must be one of {', '.join(WARMUP_UNITS)}, got {warmup_unit!r}")
        v = logit_recipe(
            "dkd", logit_standardize, {"alpha": alpha, "beta": beta, "temperature": temperature},
            plain={"alpha": 1.0, "beta": 2.0, "temperature": 4.0}, recipe={"alpha": 9.0, "beta": 18.0, "temperature": 2.0},
        )
        self.alpha, self.beta, self.temperature, self.task_weight = v["alpha"], v["beta"], v["temperature"], task_weight
        self.warmup, self.warmup_unit, self.logit_standardize = warmup, warmup_unit, logit_standardize
        self._w = warmup_factor(warmup, warmup_unit, 0, 0)

    def on_train_step(self, step: int, total_steps: int, epoch: int) -> None:
        self._w = warmup_factor(self.warmup, self.warmup_unit, step, epoch)

    def forward_train(self, x: Any, y: Any) -> tuple[Any, dict[str, Tensor]]:
        teacher, _ = self.read_parent(x)
        out = self.child(x)
        s, t = standardized(self.logit_standardize, out, teacher)
        (s, target), (t, _) = as_rows(s, y), as_rows(t)
        return out, {
            "task": self.task_weight * self.task_loss(out, y),
            "dkd": self._w * dkd_loss(s, t, target, self.alpha, self.beta, self.temperature),
        }

    def log_values(self) -> dict[str, Tensor]:
        return {"warmup/dkd": torch.tensor(self._w)}
