"""Images read one at a time, for datasets too large or too varied to hold decoded in memory: an ImageFolder tree
(``root/{train,val,test}/<class>/<image>``) or a Hugging Face ``datasets`` split.

An ImageFolder tree is listed once and every file's header checked (Pillow ``verify()``, plus a full decode of a
JPEG that lacks its end marker, since ``verify()`` cannot see a truncated JPEG). The listing and the verdicts are
cached under ``$HKT_CACHE_DIR/index/`` by a fingerprint of the tree (every file's path, size and mtime), so a second
run lists the folder but reads no image. Decoding happens later, in the DataLoader workers (``decode``).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from hkt.data.sources import DatasetNotFoundError, cache_dir, fingerprint
from hkt.io import read_json, write_atomic

log = logging.getLogger("hkt")
# torchvision's ImageFolder extensions (``torchvision.datasets.folder.IMG_EXTENSIONS``): other files are not images
EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
INDEX_VERSION = 1


class CorruptImageError(ValueError):
    """Files that cannot be decoded, named, with the fix."""


def decode(image: Image.Image, channels: int, where: str) -> Image.Image:
    """``image`` upright (its EXIF orientation applied) in mode RGB (``channels`` 3) or L (1), from any mode Pillow
    opens: L, LA, P (with or without transparency), RGBA, CMYK, YCbCr, 16-bit and float greyscale. Alpha is dropped
    (as torchvision's ``ImageFolder`` does); 16-bit values are scaled to 8 bits, not clipped."""
    try:
        image = ImageOps.exif_transpose(image)
        if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            a = np.asarray(image, dtype=np.float64)
            top = 65535.0 if image.mode.startswith("I;16") or a.max(initial=0) > 255 else 255.0
            image = Image.fromarray(np.clip(a * (255.0 / top) + 0.5, 0, 255).astype(np.uint8), "L")
        elif image.mode == "P":
            image = image.convert("RGBA")  # a palette with transparency converts through RGBA without a warning
        return image.convert("RGB" if channels == 3 else "L")
    except (OSError, ValueError, SyntaxError) as e:  # Pillow's decode errors (truncated data, bad tables)
        raise CorruptImageError(f"{where}: cannot decode ({e}); remove or replace the file") from e


def open_image(path: str | Path, channels: int) -> Image.Image:
    """Decode the file at ``path`` (see ``decode``); a file that cannot be read is named."""
    try:
        with Image.open(path) as im:
            return decode(im, channels, str(path))
    except CorruptImageError:
        raise
    except (OSError, ValueError, SyntaxError) as e:
        raise CorruptImageError(f"{path}: cannot read ({e}); remove or replace the file") from e


def check_file(path: Path) -> str | None:
    """Why ``path`` cannot be used as an image (a short reason), or ``None`` when it decodes. Cheap: Pillow reads the
    header and ``verify()`` the chunk checksums; only a JPEG without its end-of-image marker is decoded in full."""
    try:
        with Image.open(path) as im:
            im.verify()
            jpeg = im.format == "JPEG"
        if jpeg:
            with open(path, "rb") as f:
                f.seek(max(0, path.stat().st_size - 2))
                if f.read() != b"\xff\xd9":  # truncated, or trailing bytes: decode it to know
                    with Image.open(path) as im:
                        im.load()
        return None
    except Exception as e:  # noqa: BLE001 (any failure of a third-party decoder means: not usable)
        return f"{type(e).__name__}: {e}"


def _class_files(split_dir: Path, classes: tuple[str, ...]) -> list[tuple[str, int]]:
    """``(path relative to split_dir, label)`` of every image under ``split_dir/<class>/`` (recursive, sorted)."""
    files = []
    for label, name in enumerate(classes):
        found = sorted(
            os.path.relpath(os.path.join(d, n), split_dir)
            for d, _, names in os.walk(split_dir / name, followlinks=True)
            for n in names
            if n.lower().endswith(EXTENSIONS)
        )
        if not found:
            raise DatasetNotFoundError(
                f"{split_dir / name} holds no image ({', '.join(EXTENSIONS)}); add images or remove the class folder"
            )
        files += [(f, label) for f in found]
    return files


def folder_classes(split_dir: Path) -> tuple[str, ...]:
    return tuple(sorted(d.name for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith(".")))


@dataclass
class FolderIndex:
    """An ImageFolder tree listed and checked: per split, ``(path, label)`` of the usable files, and the files
    skipped as corrupt (``path: reason``)."""

    root: str
    classes: tuple[str, ...]
    splits: dict[str, list[tuple[str, int]]]  # "train", and "val" / "test" when the tree has them
    corrupt: dict[str, str]
    fingerprint: str


def index_folder(root: str | os.PathLike) -> FolderIndex:
    """List and check ``root/train/<class>/``, and ``root/val/``, ``root/test/`` when present (their class folders must
    equal train's). Cached by the tree's fingerprint. Raises ``DatasetNotFoundError`` naming what is missing."""
    root = Path(root).expanduser()
    if not (root / "train").is_dir():
        raise DatasetNotFoundError(
            f"{root} has no train/ folder; data.root of image_folder must hold train/<class>/<image> (and optionally "
            "val/<class>/ and test/<class>/), as torchvision's ImageFolder reads"
        )
    classes = folder_classes(root / "train")
    if not classes:
        raise DatasetNotFoundError(f"{root / 'train'} has no class folders; expected train/<class>/<image>")
    present = [s for s in ("train", "val", "test") if (root / s).is_dir()]
    for split in present[1:]:
        other = folder_classes(root / split)
        if other != classes:
            raise ValueError(
                f"ImageFolder tree {root}: {split}/ has other classes than train/ (only in train: "
                f"{sorted(set(classes) - set(other))[:5]}; only in {split}: {sorted(set(other) - set(classes))[:5]}). Labels "
                "are class-folder indices, so every split needs the same class folders."
            )
    listed = {s: _class_files(root / s, classes) for s in present}
    fp = fingerprint([root / s / f for s in present for f, _ in listed[s]])
    cached = cache_dir() / "index" / f"folder-{fp[:16]}.json"
    record = read_json(cached) if cached.is_file() else None
    if not (isinstance(record, dict) and record.get("version") == INDEX_VERSION and record.get("fingerprint") == fp):
        log.info("image_folder: checking %d files under %s (once; cached by the tree's fingerprint)", sum(map(len, listed.values())), root)
        corrupt = {str(Path(s) / f): why for s in present for f, _ in listed[s] if (why := check_file(root / s / f))}
        record = {"version": INDEX_VERSION, "fingerprint": fp, "root": str(root.resolve()), "corrupt": corrupt}
        write_atomic(cached, json.dumps(record, indent=0))
    corrupt = record["corrupt"]
    splits = {s: [(f, y) for f, y in listed[s] if str(Path(s) / f) not in corrupt] for s in present}
    for s in present:  # a class whose every file is corrupt is as empty as a class without files
        empty = sorted(set(range(len(classes))) - {y for _, y in splits[s]})
        if empty:
            raise DatasetNotFoundError(f"{root / s / classes[empty[0]]} has no readable image; add images or remove the class folder")
    return FolderIndex(str(root.resolve()), classes, splits, dict(corrupt), fp)


class FolderImages:
    """One split of an ImageFolder tree: ``open(i)`` file ``i`` (not decoded), ``image(i)`` decoded (``decode``),
    ``labels`` ``(N,)``."""

    def __init__(self, folder: Path, files: list[tuple[str, int]], channels: int) -> None:
        self.folder, self.channels = folder, channels
        self.paths = [f for f, _ in files]
        self.labels = np.asarray([y for _, y in files], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def where(self, i: int) -> str:
        return str(self.folder / self.paths[i])

    def open(self, i: int) -> Image.Image:
        try:
            return Image.open(self.folder / self.paths[i])
        except (OSError, ValueError, SyntaxError) as e:  # removed or replaced since the index was built
            raise CorruptImageError(f"{self.where(i)}: cannot read ({e}); remove or replace the file") from e

    def image(self, i: int) -> Image.Image:
        with self.open(i) as im:
            return decode(im, self.channels, self.where(i))

    def subset(self, idx: np.ndarray) -> FolderImages:
        return FolderImages(self.folder, [(self.paths[i], int(self.labels[i])) for i in idx], self.channels)


class HFImages:
    """One split of a Hugging Face ``datasets.Dataset``: ``open(i)`` row ``i``'s ``image_column`` (an ``Image``
    feature: a PIL image), ``image(i)`` decoded (``decode``), ``labels`` ``(N,)`` from ``label_column``, read once."""

    def __init__(self, dataset: Any, image_column: str, labels: np.ndarray, channels: int, where: str) -> None:
        self.dataset, self.image_column, self.labels, self.channels, self.name = dataset, image_column, labels, channels, where

    def __len__(self) -> int:
        return len(self.labels)

    def where(self, i: int) -> str:
        return f"{self.name} row {i}"

    def open(self, i: int) -> Image.Image:
        value = self.dataset[int(i)][self.image_column]
        if not isinstance(value, Image.Image):
            raise TypeError(f"{self.where(i)}: column {self.image_column!r} holds {type(value).__name__}, not an image")
        return value

    def image(self, i: int) -> Image.Image:
        with self.open(i) as im:
            return decode(im, self.channels, self.where(i))

    def subset(self, idx: np.ndarray) -> HFImages:
        return HFImages(self.dataset.select(idx.tolist()), self.image_column, self.labels[idx], self.channels, self.name)
