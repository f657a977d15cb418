"""Reading checkpoints and weights without unpickling objects, with errors that name the file and say what to
do (and never suggest ``weights_only=False``)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

from torch import Tensor


class UnreadableFileError(ValueError):
    """A weights / checkpoint file is missing, empty, truncated, or holds more than tensors and plain data."""


def _check_exists(path: Path, what: str) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    if path.stat().st_size == 0:
        raise UnreadableFileError(f"{what} {path} is empty (0 bytes): an interrupted copy or download? Replace the file.")


def load_torch(path: str | os.PathLike, what: str = "checkpoint") -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; a clear ``UnreadableFileError`` otherwise."""
    import torch

    path = Path(path)
    _check_exists(path, what)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only load failed" in str(e).lower() or "unsupported global" in str(e).lower():
            raise UnreadableFileError(
                f"{what} {path} holds Python objects besides tensors and plain data, which hkt refuses to unpickle (it "
                "could run arbitrary code). If you trust its origin, re-save just its state_dict (or use safetensors)."
            ) from None
        raise UnreadableFileError(f"{what} {path} is not a readable PyTorch file ({e}); it may be truncated or corrupt") from None
    except Exception as e:  # EOFError, RuntimeError (zip), KeyError (legacy format garbage), ...
        detail = str(e).splitlines()[0].split(". ")[0] if str(e) else type(e).__name__
        raise UnreadableFileError(
            f"{what} {path} is truncated or not a PyTorch file ({detail[:160]}); replace it (or, for a run's "
            "last.ckpt, delete it to restart the run)"
        ) from None


def load_safetensors(path: str | os.PathLike, what: str = "weights file") -> dict[str, Tensor]:
    """Tensors of a ``.safetensors`` file; a clear ``UnreadableFileError`` when it is truncated or corrupt."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    _check_exists(path, what)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise UnreadableFileError(f"{what} {path} is not a valid safetensors file ({e}); it may be truncated, re-export it") from None
