"""Pictures of predictions: optical flow on the Middlebury colour wheel (hue = direction, saturation = magnitude)."""

from __future__ import annotations

import torch
from torch import Tensor


def flow_to_rgb(flows: list[Tensor]) -> Tensor:
    """Flows ``(2, H, W)`` (same size) -> ``(N, 3, H, W)`` uint8 images on one common magnitude scale (the largest
    magnitude among them), so that a method that underestimates motion looks paler than the ground truth."""
    from torchvision.utils import flow_to_image

    return flow_to_image(torch.stack([f.float() for f in flows]))  # normalises by the max over the whole batch
