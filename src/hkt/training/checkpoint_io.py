"""Lightning checkpoints written atomically (temporary file + rename) and read without unpickling objects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from hkt.io import kill_point, load_torch, write_with


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        write_with(path, lambda tmp: torch.save(checkpoint, tmp))
        kill_point(f"saved:{Path(path).name}")  # the crash tests' "just after a checkpoint"

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        return load_torch(path, "checkpoint")
