"""The parent cache: what a frozen parent returned for a batch, kept on disk and handed back the next time the same
batch comes (another method, another tuning trial, on the same data stream).

Exact by construction, because it is addressed by content, not by a description of the run:

- a **cache directory** per (parent class, hash of every parent weight and buffer with its shape, stride and
  dtype, the gene paths read, device type, autocast dtype): another parent, other genes or another precision use
  another directory, and a run can never read another parent's values;
- a **shard** per batch, named by a hash of the input's bytes, shape, stride and dtype: any change in data,
  split, subset, augmentation, order, batch size, seed or rank changes the input, so it misses.

Values are stored in the dtype the parent produced (safetensors, written to a temporary file and renamed, so a
reader never sees half a shard, whatever kills the writer). A shard that cannot be read (truncated, corrupt) is
named in a warning, deleted and recomputed, never used. Several workers can share one cache: the same batch
writes the same bytes, and the rename is atomic.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from hkt.io import write_atomic, write_with

log = logging.getLogger("hkt")
VERSION = 1  # bump when what a shard holds changes
GB = 1024**3


class ParentCacheError(ValueError):
    """A parent cache that cannot serve this run (read-only and missing, over its disk budget)."""


def _tensor_digest(h: Any, t: Tensor) -> None:
    t = t.detach()
    h.update(f"{tuple(t.shape)}|{t.stride()}|{t.dtype}|".encode())
    if t.numel():  # hashed through the buffer protocol: no copy beyond the move to the CPU
        h.update(t.reshape(-1).contiguous().cpu().view(torch.uint8).numpy())


def parent_fingerprint(parent: nn.Module, paths: list[str]) -> dict[str, Any]:
    """What the parent's outputs depend on besides its input: class, weights (hashed), gene paths, precision."""
    h = hashlib.blake2b(digest_size=16)
    for name, t in list(parent.state_dict(keep_vars=False).items()):
        h.update(name.encode())
        _tensor_digest(h, t)
    device = next((p.device.type for p in parent.parameters()), "cpu")
    autocast = str(torch.get_autocast_dtype(device)) if torch.is_autocast_enabled(device) else None
    return {"version": VERSION, "parent": type(parent).__qualname__, "weights": h.hexdigest(), "genes": sorted(paths),
            "device": device, "autocast": autocast}


def _flatten(out: Any, feats: dict[str, Tensor]) -> dict[str, Tensor]:
    """``{name: tensor}`` for safetensors: the output (a tensor, a list/tuple of tensors, or ``None``: genes only) and
    the gene features."""
    if out is None:
        flat = {}
    elif isinstance(out, Tensor):
        flat = {"out": out}
    elif isinstance(out, (list, tuple)) and all(isinstance(t, Tensor) for t in out):
        flat = {f"out.{i}": t for i, t in enumerate(out)}
    else:
        raise TypeError(f"the parent cache stores a tensor or a list of tensors, not {type(out).__name__}")
    flat.update({f"gene.{p}": t for p, t in feats.items()})
    return {k: v.detach().contiguous().cpu() for k, v in flat.items()}


def stored_bytes(out: Any, feats: dict[str, Tensor]) -> int:
    """Bytes of one shard's tensors."""
    return sum(t.numel() * t.element_size() for t in _flatten(out, feats).values())


def _unflatten(flat: dict[str, Tensor], device: torch.device) -> tuple[Any, dict[str, Tensor]]:
    feats = {k[len("gene."):]: v.to(device) for k, v in flat.items() if k.startswith("gene.")}
    if "out" in flat:
        return flat["out"].to(device), feats
    outs = sorted((int(k[len("out."):]), v) for k, v in flat.items() if k.startswith("out."))
    return ([v.to(device) for _, v in outs] if outs else None), feats


class ParentCache:
    """``get(x)`` / ``put(x, out, feats)`` for one parent and one set of gene paths.

    Args:
        root: the cache folder (shared between runs and workers); this parent's values go to ``root/<key>/``.
        parent: the frozen parent (its weights are hashed once here).
        paths: the parent gene paths the method reads (``[]`` for logit methods).
        read_only: never write (a prepared cache); a missing directory is an error.
        max_gb: refuse to start when the cache would grow past this (see :meth:`check_budget`).
    """

    def __init__(self, root: str | os.PathLike, parent: nn.Module, paths: list[str], read_only: bool = False,
                 max_gb: float | None = None) -> None:
        self.key = parent_fingerprint(parent, paths)
        digest = hashlib.sha256(json.dumps(self.key, sort_keys=True).encode()).hexdigest()[:24]
        self.dir = Path(root) / digest
        self.read_only, self.max_gb = read_only, max_gb
        self.hits = self.misses = self.bytes_written = 0
        if read_only and not (self.dir / "key.json").is_file():
            raise ParentCacheError(
                f"parent_cache.read_only: {Path(root)} holds no values for this parent and genes ({self.key['parent']}, "
                f"weights {self.key['weights'][:12]}…, genes {self.key['genes']}); fill it with a writable run first, or "
                "point parent_cache.dir at the cache of this parent"
            )
        if not read_only:
            self.dir.mkdir(parents=True, exist_ok=True)
            if not (self.dir / "key.json").is_file():
                write_atomic(self.dir / "key.json", json.dumps(self.key, indent=1))

    def _shard(self, x: Tensor) -> Path:
        h = hashlib.blake2b(digest_size=20)
        _tensor_digest(h, x)
        return self.dir / f"{h.hexdigest()}.safetensors"

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.dir.glob("*.safetensors")) if self.dir.is_dir() else 0

    def check_budget(self, per_batch_bytes: int, batches: int) -> None:
        """Fail before training when the shards a run may add (``batches`` of ``per_batch_bytes``) would take the
        cache past ``max_gb``; the message gives the estimate."""
        if self.max_gb is None or self.read_only:
            return
        have, add = self.size_bytes(), per_batch_bytes * batches
        if have + add > self.max_gb * GB:
            raise ParentCacheError(
                f"parent_cache: this run may add {add / GB:.2f} GB ({batches} batches x {per_batch_bytes / 2**20:.1f} MB of parent "
                f"outputs{', genes ' + str(self.key['genes']) if self.key['genes'] else ''}) to the {have / GB:.2f} GB in {self.dir}, "
                f"past parent_cache.max_gb = {self.max_gb:g}; raise max_gb, free space, or read fewer or smaller genes"
            )

    def get(self, x: Tensor) -> tuple[Any, dict[str, Tensor]] | None:
        """The stored ``(output, {path: feature})`` of batch ``x`` on ``x``'s device, or ``None`` (a miss)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        shard = self._shard(x)
        if not shard.is_file():
            self.misses += 1
            return None
        try:
            flat = load_file(shard)
        except (SafetensorError, OSError, ValueError) as e:
            log.warning("parent_cache: %s cannot be read (%s); recomputing it", shard, e)
            if not self.read_only:
                shard.unlink(missing_ok=True)
            self.misses += 1
            return None
        self.hits += 1
        return _unflatten(flat, x.device)

    def put(self, x: Tensor, out: Any, feats: dict[str, Tensor]) -> None:
        if self.read_only:
            return
        from safetensors.torch import save

        data = save(_flatten(out, feats))
        # a kill or a full disk never leaves half a shard under its name
        write_with(self._shard(x), lambda tmp: Path(tmp).write_bytes(data))
        self.bytes_written += len(data)

    def summary(self) -> dict[str, Any]:
        total = self.hits + self.misses
        return {"dir": str(self.dir), "hits": self.hits, "misses": self.misses,
                "hit_rate": self.hits / total if total else None, "written_mb": self.bytes_written / 2**20,
                "size_mb": self.size_bytes() / 2**20}
