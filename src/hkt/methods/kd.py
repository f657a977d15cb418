"""``kd``: Hinton et al. 2015 — ``task_weight * task + kd_weight * T^2 KL(p_parent^T || p_child^T)``, where
``p^T = softmax(logits / T)`` (per pixel for segmentation; for flow, the task's ``distill``: child iterations
regress the parent's final flow).

Defaults: T = 4, as RepDistiller and mdistiller use for CIFAR. Weights 1 and 1 (Hinton's sum of the two terms);
RepDistiller (``-r 0.1 -a 0.9``) and mdistiller (``CE_WEIGHT 0.1, KD_WEIGHT 0.9``) use 0.1 and 0.9 on CIFAR: set
``task_weight: 0.1, kd_weight: 0.9`` to match them. ``hkt compare`` searches ``kd_weight`` per grid.
``logit_standardize: true`` z-scores both logits before the temperature (Sun et al., CVPR 2024) and, for the options
left unset, takes the authors' recipe: T 2, KD weight 9, task weight 0.1 (their README runs ``--logit-stand
--base-temp 2 --kd-weight 9`` on mdistiller's KD, whose CE weight is 0.1); the values used are logged.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from hkt.losses import kd_loss, standardized
from hkt.methods.base import DistillLoss, Method, TaskLoss, logit_recipe


class KD(Method):
    """Hinton KD on logits (the module docstring gives the formula and the sources of the defaults).

    Args:
        temperature: T (default 4; 2 with ``logit_standardize``).
        kd_weight: weight of the KD term (default 1; 9 with ``logit_standardize``).
        task_weight: weight of the task loss (default 1; 0.1 with ``logit_standardize``).
        logit_standardize: z-score both logits before the temperature (Sun et al., CVPR 2024).
    """

    def __init__(
        self,
        child: nn.Module,
        parent: nn.Module,
        temperature: float | None = None,
        kd_weight: float | None = None,
        task_weight: float | None = None,
        logit_standardize: bool = False,
        task_loss: TaskLoss = F.cross_entropy,
        distill_loss: DistillLoss = kd_loss,
    ) -> None:
        super().__init__(child, parent, task_loss)
        v = logit_recipe(
            "kd",
            logit_standardize,
            {"temperature": temperature, "kd_weight": kd_weight, "task_weight": task_weight},
            plain={"temperature": 4.0, "kd_weight": 1.0, "task_weight": 1.0},
            recipe={"temperature": 2.0, "kd_weight": 9.0, "task_weight": 0.1},
        )
        self.temperature, self.kd_weight, self.task_weight = v["temperature"], v["kd_weight"], v["task_weight"]
        self.logit_standardize = logit_standardize
        self.distill_loss = distill_loss

    def forward_train(self, x: Any, y: Any) -> tuple[Any, dict[str, Tensor]]:
        teacher, _ = self.read_parent(x)
        out = self.child(x)
        s, t = standardized(self.logit_standardize, out, teacher)
        return out, {
            "task": self.task_weight * self.task_loss(out, y),
            "kd": self.kd_weight * self.distill_loss(s, t, self.temperature),
        }
