"""Files that must never be half-written, lost or unsafely read: atomic writes, one writer per run folder,
and loading of checkpoints / weights that never unpickles objects and names the file when it fails.
Used by the data layer and the training layer alike, so it depends on neither."""

from hkt.io.atomic import publish, read_json, save_array, savefig, write_atomic, write_with
from hkt.io.kill import kill_point
from hkt.io.lock import RunLock, RunLockedError
from hkt.io.safe_load import UnreadableFileError, load_safetensors, load_torch

__all__ = [
    "RunLock",
    "RunLockedError",
    "UnreadableFileError",
    "kill_point",
    "load_safetensors",
    "load_torch",
    "publish",
    "read_json",
    "save_array",
    "savefig",
    "write_atomic",
    "write_with",
]
