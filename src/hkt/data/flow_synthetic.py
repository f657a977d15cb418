"""An offline, seeded, FlyingChairs-like training set generated on the fly: textured layers cut from real
photographs move with random affine motions over a moving textured background.

Each layer ``L`` maps image pixels to its texture through an affine map ``M_t`` per frame ``t``; frame ``t``
samples the texture at ``M_t p`` (bilinear) wherever ``L`` is the top-most layer. The ground truth at a frame-1
pixel ``p`` of layer ``L`` is exact: ``flow(p) = M_2^-1 M_1 p - p``. It is valid (occlusion-aware) only when
``p + flow(p)`` lies inside frame 2 and ``L`` is still the top-most layer there.

Textures are greyscale (the one real flow ground truth offline, Middlebury Grove3, is greyscale): the
Middlebury frames except Grove2/Grove3 (Grove3 is an evaluation pair) and scikit-image's sample photographs
(not the motorcycle stereo pair, another evaluation pair). Frames are returned as 3 identical channels in
``[-1, 1]``, as RAFT expects.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

SKIMAGE_TEXTURES = (
    "astronaut",
    "camera",
    "coffee",
    "chelsea",
    "rocket",
    "brick",
    "grass",
    "gravel",
    "coins",
    "moon",
    "clock",
    "immunohistochemistry",
)
HELD_OUT = ("Grove2", "Grove3")


@lru_cache(maxsize=4)
def texture_bank(middlebury_root: str | None) -> tuple[Tensor, ...]:
    """Greyscale textures in ``[0, 1]``, each ``(1, H, W)``, at most 320 pixels on the long side."""
    import skimage.data
    from PIL import Image

    images: list[np.ndarray] = []
    for name in SKIMAGE_TEXTURES:
        im = np.asarray(getattr(skimage.data, name)(), dtype=np.float32)
        images.append(im.mean(-1) if im.ndim == 3 else im)
    if middlebury_root and Path(middlebury_root).is_dir():
        for frame in sorted(Path(middlebury_root).glob("*/frame10.png")):
            if frame.parent.name not in HELD_OUT:
                images.append(np.asarray(Image.open(frame).convert("L"), dtype=np.float32))
    bank = []
    for im in images:
        t = torch.from_numpy(im / max(float(im.max()), 1.0))[None, None]
        scale = 320 / max(t.shape[-2:])
        if scale < 1:
            t = F.interpolate(t, scale_factor=scale, mode="area")
        bank.append(t[0].float())
    return tuple(bank)


def _affine(center_img: np.ndarray, center_tex: np.ndarray, angle: float, scale: float) -> np.ndarray:
    """3x3 map image pixel -> texture pixel: rotate by ``-angle``, divide by ``scale``, about the centres."""
    c, s = math.cos(angle), math.sin(angle)
    a = np.array([[c, s], [-s, c]]) / scale
    m = np.eye(3)
    m[:2, :2] = a
    m[:2, 2] = center_tex - a @ center_img
    return m


def _sample(texture: Tensor, coords: Tensor) -> Tensor:
    """Bilinear texture ``(1, Ht, Wt)`` at pixel coordinates ``coords (H, W, 2)`` (x, y) -> ``(H, W)``; 0 outside."""
    ht, wt = texture.shape[-2:]
    grid = torch.stack([coords[..., 0] / (wt - 1) * 2 - 1, coords[..., 1] / (ht - 1) * 2 - 1], -1)
    return F.grid_sample(texture[None], grid[None].to(texture.dtype), mode="bilinear", padding_mode="reflection", align_corners=True)[0, 0]


class SyntheticFlow(Dataset):
    """``size`` seeded pairs of ``shape = (H, W)``. Item ``i`` is always the same pair for the same ``seed`` (a
    sequence of non-negative ints); item ``(i, epoch)`` (from ``EpochSampler``) is a fresh pair per epoch, so a
    training set of ``size`` pairs per epoch never repeats.

    Items: ``(pair (2, 3, H, W) in [-1, 1], (flow (2, H, W), valid (H, W) bool))``.

    Args:
        layers: range of foreground layers per pair (inclusive).
        max_shift: largest foreground translation in pixels (background: a quarter of it).
        max_rotation: largest foreground rotation in degrees; ``max_zoom``: largest relative scale change.
    """

    def __init__(
        self,
        size: int,
        shape: tuple[int, int] = (128, 128),
        seed: tuple[int, ...] = (0,),
        middlebury_root: str | None = None,
        layers: tuple[int, int] = (2, 5),
        max_shift: float = 12.0,
        max_rotation: float = 10.0,
        max_zoom: float = 0.1,
    ) -> None:
        self.size, self.shape, self.seed = size, tuple(shape), tuple(seed)
        self.middlebury_root = middlebury_root
        self.layers, self.max_shift, self.max_rotation, self.max_zoom = layers, max_shift, max_rotation, max_zoom

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        i, epoch = key if isinstance(key, tuple) else (key, None)
        if not 0 <= i < self.size:
            raise IndexError(i)
        rng = np.random.default_rng([*self.seed, i] if epoch is None else [*self.seed, epoch, i])
        bank = texture_bank(self.middlebury_root)
        h, w = self.shape
        ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
        pix = torch.stack([xs, ys, torch.ones_like(xs)], -1)  # (H, W, 3) homogeneous image pixels
        frames = [torch.zeros(h, w, dtype=torch.float64) for _ in range(2)]
        owner = [torch.full((h, w), -1, dtype=torch.long) for _ in range(2)]
        maps = []
        n = int(rng.integers(self.layers[0], self.layers[1] + 1))
        for layer in range(n + 1):  # layer 0: the background, covering the frame
            tex = bank[int(rng.integers(len(bank)))]
            ht, wt = tex.shape[-2:]
            fg = layer > 0
            shift, rot, zoom = (
                (self.max_shift, self.max_rotation, self.max_zoom) if fg else (self.max_shift / 4, self.max_rotation / 4, self.max_zoom / 2)
            )
            c_img = rng.uniform([0, 0], [w, h]) if fg else np.array([w / 2, h / 2])
            c_tex = rng.uniform([0.3 * wt, 0.3 * ht], [0.7 * wt, 0.7 * ht])
            angle, scale = math.radians(rng.uniform(-30, 30) if fg else 0.0), rng.uniform(0.7, 1.3) if fg else rng.uniform(1.1, 1.4)
            d = rng.uniform(-shift, shift, 2)
            m1 = _affine(c_img, c_tex, angle, scale)
            m2 = _affine(c_img + d, c_tex, angle + math.radians(rng.uniform(-rot, rot)), scale * (1 + rng.uniform(-zoom, zoom)))
            maps.append((m1, m2))
            radii = rng.uniform(0.06, 0.18, 2) * min(ht, wt)  # an elliptical cut-out, in texture pixels
            tilt = rng.uniform(0, math.pi)
            brightness = rng.uniform(0.6, 1.2)
            for t, m in enumerate((m1, m2)):
                coords = pix @ torch.from_numpy(m[:2].T)  # (H, W, 2) texture pixels
                if fg:
                    rel = coords - torch.from_numpy(c_tex)
                    u = rel[..., 0] * math.cos(tilt) + rel[..., 1] * math.sin(tilt)
                    v = -rel[..., 0] * math.sin(tilt) + rel[..., 1] * math.cos(tilt)
                    inside = (u / radii[0]) ** 2 + (v / radii[1]) ** 2 <= 1
                else:
                    inside = torch.ones(h, w, dtype=torch.bool)
                frames[t] = torch.where(inside, _sample(tex, coords).double() * brightness, frames[t])
                owner[t] = torch.where(inside, torch.full_like(owner[t], layer), owner[t])
        flow = torch.zeros(2, h, w, dtype=torch.float64)
        for layer, (m1, m2) in enumerate(maps):
            move = torch.from_numpy(np.linalg.inv(m2) @ m1)  # frame-1 pixel -> frame-2 pixel for this layer
            target = pix @ move[:2].T
            sel = owner[0] == layer
            flow[:, sel] = (target[sel] - pix[sel][:, :2]).T
        q = torch.stack([xs, ys]) + flow
        inside = (q[0] >= 0) & (q[0] <= w - 1) & (q[1] >= 0) & (q[1] <= h - 1)
        qx, qy = q[0].round().long().clamp(0, w - 1), q[1].round().long().clamp(0, h - 1)
        valid = inside & (owner[1][qy, qx] == owner[0])
        pair = torch.stack([f.clamp(0, 1).float() * 2 - 1 for f in frames])[:, None].expand(2, 3, h, w).contiguous()
        return pair, (flow.float(), valid)
