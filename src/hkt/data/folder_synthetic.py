"""A generated ImageFolder tree that looks like a user's photo folder: mixed sizes, file formats and Pillow modes,
classes a small network can tell apart (each class its own colour and stripe direction, under noise). The tests,
the README recipe's test and ``benchmarks/folder_pipeline.py`` read it; nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# (mode, extension): what users' folders hold besides plain RGB JPEGs
MODES = (("RGB", ".jpg"), ("L", ".png"), ("RGBA", ".png"), ("P", ".png"), ("CMYK", ".jpg"), ("I;16", ".png"), ("LA", ".png"))


def class_image(label: int, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """``(H, W, 3)`` uint8: class ``label``'s hue and stripe direction, a random phase, noise."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = np.pi * label / 3.0
    phase = rng.uniform(0, 2 * np.pi)
    stripes = 0.5 + 0.5 * np.sin((np.cos(angle) * xx + np.sin(angle) * yy) * (12.0 / max(w, h)) * np.pi + phase)
    hue = np.roll(np.array([1.0, 0.35, 0.1]), label)
    image = stripes[..., None] * hue * 200 + rng.normal(0, 20, (h, w, 3)) + 25
    return np.clip(image, 0, 255).astype(np.uint8)


def write_image(path: Path, pixels: np.ndarray, mode: str, quality: int = 90) -> None:
    """Save ``pixels`` ``(H, W, 3)`` uint8 in Pillow ``mode`` (16-bit greyscale scaled up from 8 bits)."""
    image = Image.fromarray(pixels, "RGB")
    if mode == "I;16":
        image = Image.fromarray(np.asarray(image.convert("L"), dtype=np.uint16) * 257)
    elif mode == "P":
        image = image.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    elif mode != "RGB":
        image = image.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, quality=quality) if path.suffix == ".jpg" else image.save(path)


def write_image_folder(
    root: str | Path,
    classes: int = 3,
    per_class: dict[str, int] | None = None,
    sizes: tuple[int, int] = (48, 96),
    modes: tuple[tuple[str, str], ...] = MODES,
    seed: int = 0,
) -> Path:
    """Write ``root/<split>/class<k>/<n><ext>`` for the splits and counts of ``per_class`` (default 24 train and
    8 test images per class), each image ``W x H`` drawn from ``sizes``, modes cycling through ``modes``."""
    root, rng = Path(root), np.random.default_rng(seed)
    for split, n in (per_class or {"train": 24, "test": 8}).items():
        for label in range(classes):
            for i in range(n):
                mode, ext = modes[(i + label) % len(modes)]
                size = tuple(int(v) for v in rng.integers(sizes[0], sizes[1] + 1, 2))
                write_image(root / split / f"class{label}" / f"{i:05d}{ext}", class_image(label, size, rng), mode)
    return root
