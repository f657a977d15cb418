"""The parent cache: what a frozen parent returned for a batch, kept on disk and handed back the next time the same
batch comes (another method, another tuning trial, on the same data stream).

Exact by construction, because it is addressed by content, not by a description of the run:

- a **cache directory** per (parent class, hash of every parent weight and buffer with its shape, stride and
  dtype, device type, autocast dtype, storage dtype): another parent or another precision uses another directory,
  and a run can never read another parent's values;
- a **shard** per batch, named by a hash of the input's bytes, shape, stride and dtype: any change in data,
  split, subset, augmentation, order, batch size, seed or rank changes the input, so it misses;
- inside a shard, one tensor per thing read: the parent's output and each gene's feature, by parent path. A method
  that needs a gene the shard lacks misses, recomputes the parent and rewrites the shard with everything.

A grid lists in ``parent_cache.store`` the parent genes all its methods read, so that the first run on a stream
stores them all and every later method on that stream hits, whatever its genes.

Values are stored in the dtype the parent produced (safetensors, written to a temporary file and renamed, so a
reader never sees half a shard, whatever kills the writer). ``fp16: true`` stores floating values as float16
instead: every cached run, cold or warm, then reads the rounded values (relative error at most 2**-11 per value;
the largest seen on the first batch is logged), so cached runs equal each other bit for bit but not an uncached
run. A shard that cannot be read (truncated, corrupt) is named in a warning, deleted and recomputed, never used.
Several workers can share one cache: the same batch writes the same bytes, and the rename is atomic.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from torch import Tensor, nn

from hkt.core.gene import Gene
from hkt.io import write_atomic, write_with

log = logging.getLogger("hkt")
VERSION = 2  # bump when what a shard holds changes (2: one directory per parent, genes inside the shards)
GB = 1024**3
FP16_RELATIVE_ERROR = 2.0**-11  # float16 keeps 11 significant bits: round-to-nearest is within half an ulp


class ParentCacheError(ValueError):
    """A parent cache that cannot serve this run (read-only and missing, over its disk budget, float16 overflow)."""


def _tensor_digest(h: Any, t: Tensor) -> None:
    t = t.detach()
    h.update(f"{tuple(t.shape)}|{t.stride()}|{t.dtype}|".encode())
    if t.numel():  # hashed through the buffer protocol: no copy beyond the move to the CPU
        h.update(t.reshape(-1).contiguous().cpu().view(torch.uint8).numpy())


def parent_fingerprint(parent: nn.Module, fp16: bool = False) -> dict[str, Any]:
    """What the parent's outputs depend on besides its input: class, weights (hashed), precision, storage dtype, and
    the forward pre-hooks that change its input."""
    h = hashlib.blake2b(digest_size=16)
    for name, t in list(parent.state_dict(keep_vars=False).items()):
        h.update(name.encode())
        _tensor_digest(h, t)
    device = next((p.device.type for p in parent.parameters()), "cpu")
    autocast = str(torch.get_autocast_dtype(device)) if torch.is_autocast_enabled(device) else None
    return {
        "version": VERSION,
        "parent": type(parent).__qualname__,
        "weights": h.hexdigest(),
        "device": device,
        "autocast": autocast,
        "storage": "float16" if fp16 else "as computed",
        # what converts the input on entry (hkt.data.recipe.Renormalize states its map): another map, another directory
        **({"input": [repr(h) for h in parent._forward_pre_hooks.values()]} if parent._forward_pre_hooks else {}),
    }


def _flatten(out: Any, feats: dict[str, Tensor]) -> dict[str, Tensor]:
    """``{name: tensor}`` for safetensors: the output (a tensor, a list/tuple of tensors, or ``None``) and the gene
    features."""
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


def stored_bytes(out: Any, feats: dict[str, Tensor], fp16: bool = False) -> int:
    """Bytes of one shard's tensors."""
    return sum(t.numel() * (2 if fp16 and t.is_floating_point() else t.element_size()) for t in _flatten(out, feats).values())


def _unflatten(flat: dict[str, Tensor], device: torch.device, paths: Sequence[str]) -> tuple[Any, dict[str, Tensor]]:
    feats = {p: flat[f"gene.{p}"].to(device) for p in paths}
    if "out" in flat:
        return flat["out"].to(device), feats
    outs = sorted((int(k[len("out.") :]), v) for k, v in flat.items() if k.startswith("out."))
    return ([v.to(device) for _, v in outs] if outs else None), feats


def sync_device(t: Tensor) -> None:
    """Wait for ``t``'s device to finish its queued work (a no-op on the CPU)."""
    if t.is_cuda:  # kernels run asynchronously: wait for them so that a time is the parent's, not its launch
        torch.cuda.synchronize(t.device)


class ParentCache:
    """``get(x, paths)`` / ``put(x, out, feats, seconds)`` for one parent.

    Args:
        root: the cache folder (shared between runs and workers); this parent's values go to ``root/<key>/``.
        parent: the frozen parent (its weights are hashed once here).
        store: parent genes to store on every miss besides the ones the method reads (a grid's union).
        read_only: never write (a prepared cache); a missing directory is an error.
        max_gb: refuse to start when the cache would grow past this (see :meth:`check_budget`).
        fp16: store floating values as float16 (half the disk; not exact, see the module docstring).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        parent: nn.Module,
        store: Sequence[Any] = (),
        read_only: bool = False,
        max_gb: float | None = None,
        fp16: bool = False,
    ) -> None:
        self.key = parent_fingerprint(parent, fp16)
        digest = hashlib.sha256(json.dumps(self.key, sort_keys=True).encode()).hexdigest()[:24]
        self.dir = Path(root) / digest
        self.store = [Gene.parse(g) for g in store]
        self.read_only, self.max_gb, self.fp16 = read_only, max_gb, fp16
        self.hits = self.misses = self.partial = self.bytes_written = 0
        self.compute_s = self.load_s = self.saved_s = 0.0
        self.fp16_error: float | None = None
        if read_only and not (self.dir / "key.json").is_file():
            raise ParentCacheError(
                f"parent_cache.read_only: {Path(root)} holds no values for this parent ({self.key['parent']}, weights "
                f"{self.key['weights'][:12]}…, storage {self.key['storage']}); fill it with a writable run first, or "
                "point parent_cache.dir at the cache of this parent"
            )
        if not read_only:
            self.dir.mkdir(parents=True, exist_ok=True)
            if not (self.dir / "key.json").is_file():
                write_atomic(self.dir / "key.json", json.dumps(self.key, indent=1))

    def genes_to_read(self, genes: Sequence[Gene]) -> list[Gene]:
        """``genes`` and the stored ones, each parent path once: what a miss extracts."""
        seen = {g.parent for g in genes}
        return [*genes, *(g for g in self.store if g.parent not in seen and not seen.add(g.parent))]

    def _shard(self, x: Tensor) -> Path:
        h = hashlib.blake2b(digest_size=20)
        _tensor_digest(h, x)
        return self.dir / f"{h.hexdigest()}.safetensors"

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.dir.glob("*.safetensors")) if self.dir.is_dir() else 0

    def check_budget(self, per_batch_bytes: int, batches: int, genes: Sequence[str] = ()) -> None:
        """Fail before training when the shards a run may add (``batches`` of ``per_batch_bytes``: the output and
        ``genes``) would take the cache past ``max_gb``; the message gives the estimate."""
        if self.max_gb is None or self.read_only:
            return
        have, add = self.size_bytes(), per_batch_bytes * batches
        if have + add > self.max_gb * GB:
            genes = list(genes)
            raise ParentCacheError(
                f"parent_cache: this run may add {add / GB:.2f} GB ({batches} batches x {per_batch_bytes / 2**20:.1f} MB of parent "
                f"outputs{', genes ' + str(genes) if genes else ''}) to the {have / GB:.2f} GB in {self.dir}, past "
                f"parent_cache.max_gb = {self.max_gb:g}; raise max_gb, free space, store fewer or smaller genes, or set "
                "parent_cache.fp16: true (half the size)"
            )

    def get(self, x: Tensor, paths: Sequence[str] = ()) -> tuple[Any, dict[str, Tensor]] | None:
        """The stored ``(output, {path: feature})`` of batch ``x`` on ``x``'s device, or ``None`` (a miss: no shard,
        or one without every path in ``paths``)."""
        shard = self._shard(x)
        if not shard.is_file():
            if self.read_only and self.hits == self.misses == 0:
                raise ParentCacheError(
                    f"parent_cache.read_only: {self.dir} holds this parent but not the first training batch of this run: it "
                    "was filled from another data stream (data, split, subset, augmentation, batch size, seed or rank differ); "
                    "fill it with a writable run of this config, or set parent_cache.read_only: false"
                )
            self.misses += 1
            return None
        start = time.perf_counter()
        try:
            with safe_open(shard, framework="pt") as f:
                meta, flat = f.metadata() or {}, {k: f.get_tensor(k) for k in f.keys()}
            dtypes, seconds = json.loads(meta["dtypes"]), float(meta["compute_s"])
        except (SafetensorError, OSError, ValueError, KeyError) as e:
            log.warning("parent_cache: %s cannot be read (%s); recomputing it", shard, e)
            if not self.read_only:
                shard.unlink(missing_ok=True)
            self.misses += 1
            return None
        if any(f"gene.{p}" not in flat for p in paths):
            self.misses += 1
            self.partial += 1
            return None
        flat = {k: v.to(getattr(torch, dtypes[k])) for k, v in flat.items()}
        hit = _unflatten(flat, x.device, paths)
        sync_device(x)
        self.hits += 1
        load = time.perf_counter() - start
        self.load_s += load
        self.saved_s += seconds - load
        return hit

    def put(self, x: Tensor, out: Any, feats: dict[str, Tensor], seconds: float) -> tuple[Any, dict[str, Tensor]]:
        """Store batch ``x``'s parent output and gene features (``seconds``: what computing them took); return them
        as a later hit will (rounded through float16 with ``fp16``)."""
        self.compute_s += seconds
        flat = _flatten(out, feats)
        dtypes = {k: str(v.dtype).removeprefix("torch.") for k, v in flat.items()}
        if self.fp16:
            flat = self._half(flat)
        if not self.read_only:
            data = save(flat, metadata={"dtypes": json.dumps(dtypes), "compute_s": repr(seconds)})
            # a kill or a full disk never leaves half a shard under its name
            write_with(self._shard(x), lambda tmp: Path(tmp).write_bytes(data))
            self.bytes_written += len(data)
        if not self.fp16:
            return out, feats
        flat = {k: v.to(getattr(torch, dtypes[k])) for k, v in flat.items()}
        return _unflatten(flat, x.device, list(feats))

    def _half(self, flat: dict[str, Tensor]) -> dict[str, Tensor]:
        """Floating tensors as float16; the largest relative rounding error of the first batch is logged."""
        half = {k: v.to(torch.float16) if v.is_floating_point() else v for k, v in flat.items()}
        for k, v in flat.items():
            if v.is_floating_point() and not torch.isfinite(half[k]).all() and torch.isfinite(v).all():
                raise ParentCacheError(
                    f"parent_cache.fp16: the parent's {k} has values beyond float16's range (|v| up "
                    f"to {v.abs().max().item():.3g} > 65504); set parent_cache.fp16: false"
                )
        if self.fp16_error is None:
            tiny = torch.finfo(torch.float16).tiny  # below it float16 is subnormal: its error is absolute, not relative
            self.fp16_error = max(
                (
                    float(((half[k].to(v.dtype) - v).abs() / v.abs().clamp_min(tiny)).max())
                    for k, v in flat.items()
                    if v.is_floating_point() and v.numel()
                ),
                default=0.0,
            )
            log.info(
                "parent_cache.fp16: largest relative rounding error on the first batch %.2e (bound %.2e above %.1e)",
                self.fp16_error,
                FP16_RELATIVE_ERROR,
                tiny,
            )
        return half

    def summary(self) -> dict[str, Any]:
        total = self.hits + self.misses
        out = {
            "dir": str(self.dir),
            "hits": self.hits,
            "misses": self.misses,
            "partial_misses": self.partial,
            "hit_rate": self.hits / total if total else None,
            "written_mb": self.bytes_written / 2**20,
            "size_mb": self.size_bytes() / 2**20,
            "compute_s": self.compute_s,
            "load_s": self.load_s,
            "saved_s": self.saved_s,
        }
        if self.fp16:
            out["fp16_max_relative_error"] = self.fp16_error
        return out
