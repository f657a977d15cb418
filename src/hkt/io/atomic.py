"""Atomic file writing: write a temporary file in the target folder, flush it, then rename it onto the target,
so a reader (or a crash) never sees a half-written file."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hkt.io.kill import kill_point


def _umask_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def publish(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Rename a finished temporary file onto ``path`` with ordinary permissions (mkstemp makes it 0600)."""
    os.chmod(tmp, _umask_mode())
    os.replace(tmp, path)


def write_with(path: str | os.PathLike, write: Callable[[str], Any]) -> None:
    """Call ``write(tmp_path)`` then publish ``tmp_path`` as ``path``; on any failure the target is untouched
    and the temporary file is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:  # data on disk before the rename makes it visible
            os.fsync(f.fileno())
        kill_point(f"write:{path.name}")  # the crash tests' "killed while writing": the target is still the old file
        publish(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_atomic(path: str | os.PathLike, text: str) -> None:
    """Write a text file (results, summaries) atomically, UTF-8."""
    write_with(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def read_json(path: str | os.PathLike) -> Any | None:
    """The JSON document at ``path``; ``None`` when there is none, or when it cannot be read (truncated by a full disk,
    or by a writer that bypassed :func:`write_atomic`), which is logged naming the file: its producer is redone."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        logging.getLogger("hkt").warning("%s cannot be read (%s); the run that wrote it is redone", path, e)
        return None


def save_array(path: str | os.PathLike, array: Any) -> None:
    """``np.save`` atomically, without pickle."""
    import numpy as np

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)

    write_with(path, write)


def savefig(fig: Any, path: str | os.PathLike, **kwargs: Any) -> None:
    """``fig.savefig`` atomically; the format comes from ``path``'s suffix (the temporary name has none)."""
    fmt = Path(path).suffix.lstrip(".") or "png"
    write_with(path, lambda tmp: fig.savefig(tmp, format=fmt, **kwargs))
