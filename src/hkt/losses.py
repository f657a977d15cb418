"""Pure loss functions shared by tasks and methods: Hinton KD, logit standardisation and dense logits as rows.

No state and no hkt imports: a leaf that ``hkt.tasks`` (the KD term of a task) and ``hkt.methods`` both read.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def kd_loss(student: Tensor, teacher: Tensor, temperature: float = 4.0) -> Tensor:
    """Hinton KD: ``T^2 * KL(softmax(teacher / T) || softmax(student / T))`` over the class dimension 1, mean
    over everything else: per sample for logits ``(B, K)``, per pixel for dense logits ``(B, K, H, W)``."""
    t = temperature
    kl = F.kl_div(F.log_softmax(student / t, dim=1), F.log_softmax(teacher / t, dim=1), reduction="none", log_target=True)
    return kl.sum(1).mean() * t * t


def standardize(logits: Tensor) -> Tensor:
    """Logit standardisation (Sun et al., CVPR 2024): z-score over the class dimension 1, before the temperature,
    as their ``normalize`` (unbiased std, ``1e-7`` added to it). ``(B, K)`` or ``(B, K, H, W)``."""
    return (logits - logits.mean(1, keepdim=True)) / (1e-7 + logits.std(1, keepdim=True))


def standardized(enabled: bool, *logits: Tensor) -> tuple[Tensor, ...]:
    """``logits`` z-scored by ``standardize`` when ``enabled`` (the ``logit_standardize`` option), else as given."""
    return tuple(standardize(z) for z in logits) if enabled else logits


def as_rows(logits: Tensor, target: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    """Dense logits ``(B, K, H, W)`` as ``(B*H*W, K)`` rows (and targets ``(B, H, W)`` as ``(B*H*W,)``), so a
    per-sample logit loss applies per pixel; ``(B, K)`` unchanged."""
    if logits.dim() == 2:
        return logits, target
    k = logits.shape[1]
    rows = logits.movedim(1, -1).reshape(-1, k)
    return rows, (target.reshape(-1) if target is not None else None)
