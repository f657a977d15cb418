"""Middlebury ``.flo`` files: the float32 magic ``202021.25``, width and height as int32, then ``H * W * 2``
float32 values ``(u, v)`` interleaved, row-major. Values above ``1e9`` mean "unknown" (invalid pixels)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

MAGIC = 202021.25
UNKNOWN = 1e9


class FloError(ValueError):
    """A ``.flo`` file is malformed (wrong magic number, impossible size, truncated data)."""


def read_flo(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read ``path``: flow ``(2, H, W)`` float32 (unknown pixels set to 0) and valid ``(H, W)`` bool."""
    path = Path(path)
    raw = path.read_bytes()
    if len(raw) < 12:
        raise FloError(f"{path} is {len(raw)} bytes, shorter than the 12-byte .flo header")
    magic = float(np.frombuffer(raw[:4], "<f4")[0])
    if magic != MAGIC:
        raise FloError(f"{path} has magic number {magic!r}, not {MAGIC} (PIEH): not a Middlebury .flo file, or written big-endian")
    w, h = (int(v) for v in np.frombuffer(raw[4:12], "<i4"))
    if not (0 < w < 100_000 and 0 < h < 100_000):
        raise FloError(f"{path} declares an impossible size {w} x {h}")
    need = 12 + 8 * w * h
    if len(raw) < need:
        raise FloError(f"{path} is truncated: {w} x {h} flow needs {need} bytes, the file has {len(raw)}")
    uv = np.frombuffer(raw[12:need], "<f4").reshape(h, w, 2)
    valid = (np.abs(uv) < UNKNOWN).all(-1) & np.isfinite(uv).all(-1)
    flow = np.where(valid[..., None], uv, 0.0).astype(np.float32)
    return np.ascontiguousarray(flow.transpose(2, 0, 1)), valid


def write_flo(path: str | Path, flow: np.ndarray, valid: np.ndarray | None = None) -> None:
    """Write flow ``(2, H, W)``; pixels where ``valid`` is False are written as unknown (``1e10``)."""
    flow = np.asarray(flow, dtype=np.float32)
    if flow.ndim != 3 or flow.shape[0] != 2:
        raise ValueError(f"flow must be (2, H, W), got {flow.shape}")
    uv = flow.transpose(1, 2, 0).copy()
    if valid is not None:
        uv[~np.asarray(valid, bool)] = 1e10
    _, h, w = flow.shape
    Path(path).write_bytes(np.array([MAGIC], "<f4").tobytes() + np.array([w, h], "<i4").tobytes() + uv.astype("<f4").tobytes())
