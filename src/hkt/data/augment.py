"""Batched augmentation on the training device, for datasets held in memory as uint8 images.

The loader only gathers uint8 samples; after the batch reaches the device (``on_after_batch_transfer``), one
call crops, flips and normalises the whole batch. Per-sample parameters come from a generator seeded by
``(seed, epoch, batch index within the epoch, rank)``, so a run is deterministic, a resumed run sees exactly the
batches it would have seen, and DDP ranks draw different parameters. Parameters are drawn on the CPU (a few
hundred numbers) and the pixels never leave the device.

The crop + flip is one gather (the flip folded into the column index), not a library call. torchvision's v2
transforms draw one set of parameters per call (per batch, not per sample). kornia's per-sample ``RandomCrop`` +
``RandomHorizontalFlip`` does the same job at about the same speed on CIFAR-10 and about 1.8x slower on
Fashion-MNIST (``benchmarks/results/input_pipeline.md``, one CPU thread), but it draws
from the global RNG (determinism would need ``fork_rng`` around every batch) and works on float images only (4x
the bytes of uint8); this kernel takes an explicit generator and any dtype. The segmentation transforms (rotation and scale, image and
mask together) are kornia's.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


def batch_generator(seed: int, epoch: int, batch: int, rank: int) -> torch.Generator:
    """A CPU generator for one training batch, seeded by a hash of ``(seed, epoch, batch, rank)``."""
    digest = hashlib.blake2b(f"{seed}|{epoch}|{batch}|{rank}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF)


def crop_flip(images: Tensor, padding: int, flip: bool, generator: torch.Generator) -> Tensor:
    """Random crop after zero padding by ``padding`` pixels, and a random horizontal flip (p = 0.5), drawn per
    sample. ``images`` ``(B, C, H, W)`` (any dtype, any device) -> same shape, dtype and device."""
    b, c, h, w = images.shape
    dy = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    flips = torch.rand(b, generator=generator) < 0.5 if flip else torch.zeros(b, dtype=torch.bool)
    device = images.device
    rows = (dy[:, None] + torch.arange(h)).to(device)  # (B, H) rows of the padded image
    cols = dx[:, None] + torch.arange(w)
    cols = torch.where(flips[:, None], cols.flip(1), cols).to(device)  # (B, W), a flip reverses the columns read
    padded = F.pad(images, (padding,) * 4) if padding else images
    index_b = torch.arange(b, device=device)[:, None, None, None]
    index_c = torch.arange(c, device=device)[None, :, None, None]
    return padded[index_b, index_c, rows[:, None, :, None], cols[:, None, None, :]]


def normalize(images: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """uint8 ``(B, C, H, W)`` -> float32 ``(x / 255 - mean) / std``; ``mean``, ``std`` ``(C,)``."""
    x = images.float().div_(255.0)
    return x.sub_(mean.to(x.device)[:, None, None]).div_(std.to(x.device)[:, None, None])


@functools.lru_cache(maxsize=4)
def _flip_affine(degrees: float, scale: tuple[float, float]) -> Any:
    """kornia's joint flip + affine, built once per setting rather than per batch (it holds no state between calls)."""
    import kornia.augmentation as K

    return K.AugmentationSequential(
        K.RandomHorizontalFlip(), K.RandomAffine(degrees=degrees, scale=scale, p=1.0), data_keys=["input", "mask"]
    )


def joint_flip_affine(
    images: Tensor, masks: Tensor, generator_seed: int, degrees: float = 10.0, scale: tuple[float, float] = (0.9, 1.1)
) -> tuple[Tensor, Tensor]:
    """Segmentation: the same random horizontal flip, rotation (±``degrees``) and scale per sample for image
    (bilinear) and mask (nearest: no new labels), with kornia's batched ``AugmentationSequential``, on the batch's
    device. kornia draws from the global RNG, so the draw is isolated in ``fork_rng`` and seeded by
    ``generator_seed`` (from ``batch_generator``). ``images`` ``(B, C, H, W)`` float, ``masks`` ``(B, H, W)`` int."""
    augment = _flip_affine(degrees, tuple(scale))
    devices = [images.device] if images.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(generator_seed)
        image, mask = augment(images, masks[:, None].float())
    return image, mask[:, 0].round().long()
