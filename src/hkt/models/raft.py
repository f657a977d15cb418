"""torchvision RAFT (``raft_large``, 5.3 M parameters; ``raft_small``, 1.0 M) as a module on one stacked pair.

Gene paths (``net.`` + torchvision's names): ``net.feature_encoder`` (run once on both frames, ``2B`` rows:
256 channels in raft_large, 128 in raft_small, at 1/8 resolution), ``net.context_encoder`` (frame 1 only),
``net.update_block.recurrent_block`` (the GRU's hidden state, once per refinement iteration; 128 / 96
channels), ``net.update_block.motion_encoder`` (the motion features computed from the correlation lookup).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class RAFTFlow(nn.Module):
    """``pair (B, 2, 3, H, W)`` in ``[-1, 1]`` -> list of ``iterations`` flows ``(B, 2, H, W)``, coarse to final.

    Sizes that are not multiples of 8 are padded (replicate) and the flows cropped back; RAFT's correlation
    pyramid needs at least 128 pixels per side after padding.
    """

    def __init__(self, net: nn.Module, iterations: int = 12) -> None:
        super().__init__()
        if iterations < 1:
            raise ValueError(f"RAFT needs iterations >= 1, got {iterations}")
        self.net, self.iterations = net, iterations

    def forward(self, pair: Tensor) -> list[Tensor]:
        if pair.dim() != 5 or pair.shape[1] != 2:
            raise ValueError(f"RAFTFlow takes a stacked pair (B, 2, 3, H, W), got {tuple(pair.shape)}")
        h, w = pair.shape[-2:]
        pad = (0, -w % 8, 0, -h % 8)
        first, second = pair[:, 0], pair[:, 1]
        if any(pad):
            first, second = F.pad(first, pad, mode="replicate"), F.pad(second, pad, mode="replicate")
        flows = self.net(first, second, num_flow_updates=self.iterations)
        return [f[..., :h, :w] for f in flows] if any(pad) else list(flows)


def raft(name: str, iterations: int = 12, weights: str | None = None) -> RAFTFlow:
    """``raft_large`` or ``raft_small``; ``weights`` names torchvision's published weights (``C_T_V2``,
    ``DEFAULT`` …, downloaded by torchvision), ``None`` = random initialisation."""
    import torchvision

    if name not in ("raft_large", "raft_small"):
        raise ValueError(f"unknown RAFT variant {name!r}; use raft_large or raft_small")
    return RAFTFlow(torchvision.models.get_model(name, weights=weights, progress=False), iterations)
