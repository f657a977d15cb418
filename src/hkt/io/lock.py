"""One writer per run folder: an exclusive lock file holding the owner's host and PID.

Created with ``O_CREAT | O_EXCL`` (atomic on local filesystems and NFSv3+). A lock whose owner is a dead
process on this host (a crash, ``kill -9``) is stale and taken over; a lock held by a live process, or by
another host, is refused with a message naming the holder.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

LOCK_NAME = ".hkt.lock"


class RunLockedError(RuntimeError):
    """Another process is writing to this run folder."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def is_secondary_rank() -> bool:
    """True inside the processes that a distributed launcher starts besides global rank 0: they share the run
    folder with rank 0, which holds the lock for all of them."""
    return any(os.environ.get(k, "0") not in ("", "0") for k in ("RANK", "LOCAL_RANK", "NODE_RANK"))


class RunLock:
    """``with RunLock(out_dir):`` — exclusive ownership of ``out_dir`` for the block.

    Raises ``RunLockedError`` at once when a live process holds it; ``OSError`` (e.g. read-only folder) when
    the lock file cannot be created."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.path = Path(folder) / LOCK_NAME
        self.held = False

    def holder(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def acquire(self) -> RunLock:
        if is_secondary_rank():
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self.holder()
                if owner is None:  # being written right now, or garbage: look again once
                    time.sleep(0.2)
                    owner = self.holder()
                if owner and owner.get("host") == me["host"] and not _alive(int(owner.get("pid", -1))):
                    self.path.unlink(missing_ok=True)  # stale: its process died without releasing it
                    continue
                who = f"process {owner['pid']} on {owner['host']} (since {owner.get('since', '?')})" if owner else "another process"
                raise RunLockedError(
                    f"{self.path.parent} is in use by {who}. Wait for it to finish, choose another out_dir, or, if that "
                    f"process is gone, delete {self.path}."
                ) from None
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            return self
        raise RunLockedError(f"could not take {self.path}; delete it if no hkt process uses {self.path.parent}")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
