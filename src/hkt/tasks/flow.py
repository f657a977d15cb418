"""Optical flow: RAFT's sequence loss as the task loss, end-point-error metrics with valid masks.

Outputs are lists of flows ``(B, 2, H, W)``, one per refinement iteration; the target is ``(flow (B, 2, H, W),
valid (B, H, W))``. Metrics read the final iteration and average over all valid pixels of a split (pixel-
weighted, as in RAFT's evaluation scripts).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torchmetrics import Metric, MetricCollection

from hkt.data.flow import FlowData
from hkt.tasks.base import Task

Target = tuple[Tensor, Tensor]


def sequence_loss(flows: list[Tensor], target: Target, gamma: float = 0.8, max_flow: float = 400.0) -> Tensor:
    """``sum_i gamma^(N-1-i) * mean(valid * |flow_i - gt|_1)`` over the ``N`` iterations (RAFT, Teed & Deng 2020).

    Pixels with ``|gt| >= max_flow`` are ignored, as in RAFT's training code."""
    gt, valid = target
    valid = (valid & (gt.norm(dim=1) < max_flow)).unsqueeze(1).to(gt.dtype)
    n = len(flows)
    return sum(gamma ** (n - 1 - i) * ((f - gt).abs() * valid).mean() for i, f in enumerate(flows))  # type: ignore[return-value]


class FlowError(Metric):
    """One pixel-averaged flow error over valid pixels: ``epe`` (end-point error, px), ``px1``/``px3``/``px5``
    (fraction of pixels with EPE below 1/3/5 px) or ``fl_all`` (KITTI outliers: EPE > 3 px and > 5% of |gt|).

    ``update(flows, (gt, valid))``: ``flows`` the model's output (a list: the last entry is scored) or one flow."""

    full_state_update = False

    def __init__(self, kind: str = "epe", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if kind not in ("epe", "px1", "px3", "px5", "fl_all"):
            raise ValueError(f"unknown flow metric {kind!r}")
        self.kind = kind
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, flows: Tensor | list[Tensor], target: Target) -> None:
        flow = flows[-1] if isinstance(flows, (list, tuple)) else flows
        gt, valid = target
        epe = (flow - gt).norm(dim=1)[valid]
        if self.kind == "epe":
            value = epe
        elif self.kind == "fl_all":
            value = ((epe > 3.0) & (epe > 0.05 * gt.norm(dim=1)[valid])).double()
        else:
            value = (epe < float(self.kind[2:])).double()
        self.total += value.double().sum()
        self.count += valid.sum()

    def compute(self) -> Tensor:
        return (self.total / self.count).float() if self.count > 0 else torch.tensor(float("nan"))


class Flow(Task):
    """Options of ``Flow`` (keyword arguments; configs set them by name).

    Args:
        gamma: weight decay of earlier iterations in the sequence loss (RAFT: 0.8).
        max_flow: ground truth at or above this magnitude is ignored in the loss.
    """

    data_class = FlowData
    logits = False
    monitor = "val/epe"
    mode = "min"
    net_keys: ClassVar[frozenset[str]] = frozenset({"arch", "weights", "iterations"})

    def __init__(self, gamma: float = 0.8, max_flow: float = 400.0) -> None:
        if not 0 < gamma <= 1:
            raise ValueError(f"task.gamma must be in (0, 1], got {gamma}")
        self.gamma, self.max_flow = gamma, max_flow

    def loss(self, output: list[Tensor], target: Target) -> Tensor:
        return sequence_loss(output, target, self.gamma, self.max_flow)

    def distill(self, student: list[Tensor], teacher: list[Tensor], temperature: float = 4.0) -> Tensor:
        """KD for flow: every child iteration regresses the parent's final flow (valid everywhere); no temperature."""
        final = teacher[-1].detach()
        return sequence_loss(student, (final, torch.ones_like(final[:, 0], dtype=torch.bool)), self.gamma, self.max_flow)

    def metrics(self, data: Any) -> MetricCollection:
        return MetricCollection({k: FlowError(k) for k in ("epe", "px1", "px3", "px5", "fl_all")})

    def build_net(self, net: dict[str, Any], data: Any) -> nn.Module:
        from hkt.models import build_model

        if not str(net["arch"]).startswith("torchvision:raft_"):
            raise ValueError(f"flow runs use torchvision:raft_large or torchvision:raft_small, got arch {net['arch']!r}")
        return build_model(net["arch"], weights=net.get("weights"), iterations=net.get("iterations", 12))
