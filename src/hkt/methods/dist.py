"""``dist``: DIST, Knowledge Distillation from A Stronger Teacher (Huang et al., NeurIPS 2022) —
``task + dist_weight * (beta * inter + gamma * intra)``, relations of the softened predictions ``softmax(z / T)``:

- inter-class: ``1 - mean over samples of Pearson(p_child[i, :], p_parent[i, :])``;
- intra-class: ``1 - mean over classes of Pearson(p_child[:, k], p_parent[:, k])`` (across the batch);

both times T². Defaults as the authors (hunto/DIST_KD): beta 1, gamma 1, T 4 (their ``DIST`` module), and an
overall ``dist_weight`` of 2 (``kd_loss_weight: 2`` in their CIFAR recipe ``configs/strategies/distill/dist_cifar.yaml``
and in the ImageNet one), so the effective weights are beta = gamma = 2. For segmentation
every pixel is a row (per-pixel logits), so the intra-class relation runs across all pixels of the batch.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from hkt.losses import as_rows
from hkt.methods.base import Method, TaskLoss


def pearson(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    """Row-wise Pearson correlation of ``(N, K)`` tensors: ``(N,)``."""
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def dist_loss(student: Tensor, teacher: Tensor, beta: float = 1.0, gamma: float = 1.0, temperature: float = 4.0) -> Tensor:
    """DIST for logits ``(N, K)``."""
    t = temperature
    y_s, y_t = F.softmax(student / t, 1), F.softmax(teacher / t, 1)
    inter = 1 - pearson(y_s, y_t).mean()
    intra = 1 - pearson(y_s.T, y_t.T).mean()
    return t * t * (beta * inter + gamma * intra)


class DIST(Method):
    """DIST's inter- and intra-class relations of softened predictions (formula and sources: module docstring).

    Args:
        beta: weight of the inter-class relation.
        gamma: weight of the intra-class relation.
        temperature: T.
        task_weight: weight of the task loss.
        dist_weight: overall weight of the DIST term (the authors' ``kd_loss_weight``, 2).
    """

    needs_logits = True

    def __init__(
        self,
        child: nn.Module,
        parent: nn.Module,
        beta: float = 1.0,
        gamma: float = 1.0,
        temperature: float = 4.0,
        task_weight: float = 1.0,
        dist_weight: float = 2.0,
        task_loss: TaskLoss = F.cross_entropy,
    ) -> None:
        super().__init__(child, parent, task_loss)
        self.beta, self.gamma, self.temperature, self.task_weight = beta, gamma, temperature, task_weight
        self.dist_weight = dist_weight

    def forward_train(self, x: Any, y: Any) -> tuple[Any, dict[str, Tensor]]:
        teacher, _ = self.read_parent(x)
        out = self.child(x)
        return out, {
            "task": self.task_weight * self.task_loss(out, y),
            "dist": self.dist_weight * dist_loss(as_rows(out)[0], as_rows(teacher)[0], self.beta, self.gamma, self.temperature),
        }
