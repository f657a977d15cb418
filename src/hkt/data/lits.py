"""LiTS (Liver Tumour Segmentation challenge) cases in the release format: ``volume-N.nii[.gz]`` (CT in
Hounsfield units) and ``segmentation-N.nii[.gz]`` (0 background, 1 liver, 2 tumour), read with nibabel.

Each case is decoded once and cached under ``$HKT_CACHE_DIR/lits`` as slice-major ``.npy`` arrays (HU int16,
labels uint8, ``(D, H, W)`` with ``D`` axial slices) that later runs memory-map, so the 131 training volumes
of the full dataset never need to fit in memory.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np

from hkt.data.sources import DatasetNotFoundError, cache_dir
from hkt.io import save_array

CLASSES = ("background", "liver", "tumour")
REGIONS = {"liver": (1, 2), "tumour": (2,)}  # LiTS scoring: liver includes tumour
HOME = "https://competitions.codalab.org/competitions/17094"  # registration needed: no automatic download
_VOLUME = re.compile(r"^volume-(\d+)\.nii(\.gz)?$")


class NotNiftiError(ValueError):
    """A file is not a readable NIfTI image."""


def find_cases(root: str | Path) -> list[tuple[int, Path, Path]]:
    """``[(case id, volume path, segmentation path)]`` sorted by id, for every ``volume-N`` in ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetNotFoundError(
            f"LiTS root {root} does not exist. Download the LiTS training batches from {HOME}, unpack them into one "
            "folder (volume-N.nii, segmentation-N.nii) and set data.root to it"
        )
    cases = []
    for volume in sorted(root.iterdir()):
        m = _VOLUME.match(volume.name)
        if not m:
            continue
        candidates = [root / f"segmentation-{m.group(1)}.nii{ext}" for ext in (".gz", "")]
        seg = next((c for c in candidates if c.is_file()), None)
        if seg is None:
            raise DatasetNotFoundError(f"{volume} has no mask: expected {candidates[0].name} or {candidates[1].name} next to it")
        cases.append((int(m.group(1)), volume, seg))
    if not cases:
        raise DatasetNotFoundError(f"no volume-N.nii[.gz] files in {root}; set data.root to the folder holding the LiTS cases")
    return sorted(cases)


def _load(path: Path, dtype: type) -> np.ndarray:
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError

    try:
        image = nib.load(str(path))
        if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
            raise ImageFileError(f"{type(image).__name__}, not NIfTI")
        return np.asarray(image.dataobj).astype(dtype, copy=False)
    except (ImageFileError, OSError, EOFError, ValueError) as e:
        raise NotNiftiError(f"{path} is not a readable NIfTI file ({e}); LiTS cases are volume-N.nii[.gz] / segmentation-N.nii[.gz]") from e


def read_case(volume: Path, segmentation: Path, num_classes: int = len(CLASSES), axis: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Decode one case: HU ``(D, H, W)`` int16 and labels ``(D, H, W)`` uint8, ``D`` slices along ``axis``
    (2, the last NIfTI axis, is axial in LiTS). Checks shapes and labels, naming the file at fault."""
    hu, labels = _load(volume, np.int16), _load(segmentation, np.int16)
    if hu.shape != labels.shape:
        raise ValueError(
            f"image/mask shape mismatch: {volume} is {hu.shape} but {segmentation} is {labels.shape}; pair each volume-N with "
            f"its own segmentation-N"
        )
    if hu.ndim != 3:
        raise ValueError(f"{volume} has {hu.ndim} dimensions; a LiTS volume is 3-D")
    found = np.unique(labels)
    bad = found[(found < 0) | (found >= num_classes)]
    if bad.size:
        raise ValueError(
            f"{segmentation} holds labels {bad.tolist()} outside the {num_classes} configured classes {CLASSES[:num_classes]}; "
            "remap the mask or fix data.num_classes"
        )
    return np.ascontiguousarray(np.moveaxis(hu, axis, 0)), np.ascontiguousarray(np.moveaxis(labels, axis, 0).astype(np.uint8))


def cached_case(volume: Path, segmentation: Path, num_classes: int = len(CLASSES), axis: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """``read_case`` once, then memory-mapped ``.npy`` arrays keyed by path, size and mtime of both files."""
    stamp = "|".join(f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in (volume, segmentation))
    folder = cache_dir() / "lits" / hashlib.sha1(f"{stamp}|{num_classes}|{axis}".encode()).hexdigest()[:16]
    paths = folder / "hu.npy", folder / "labels.npy"
    if not all(p.is_file() for p in paths):
        for p, a in zip(paths, read_case(volume, segmentation, num_classes, axis)):
            save_array(p, a)
    hu, labels = (np.load(p, mmap_mode="r", allow_pickle=False) for p in paths)
    return hu, labels


def window(hu: np.ndarray, lo: float = -200.0, hi: float = 250.0) -> np.ndarray:
    """Clip HU to ``[lo, hi]`` and scale to ``[-1, 1]`` (float32)."""
    return (np.clip(hu.astype(np.float32), lo, hi) - lo) / (hi - lo) * 2.0 - 1.0
