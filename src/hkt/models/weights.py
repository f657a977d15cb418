"""Pretrained weights: a registry of name -> (URL, SHA-256), a local-mirror lookup, hash-checked download
into the torch hub cache, and loading that never unpickles arbitrary objects.

Lookup order for a registered file: ``$HKT_WEIGHTS_DIR/<subdir>/<file>`` or ``$HKT_WEIGHTS_DIR/<file>``
(an offline mirror), then ``<torch hub dir>/checkpoints/<file>``, then a download (when online).
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from hkt.io import load_safetensors, load_torch

_AKAMASTER = "https://github.com/akamaster/pytorch_resnet_cifar10/raw/master/pretrained_models/"


@dataclass(frozen=True)
class WeightsEntry:
    file: str
    url: str
    sha256: str
    subdir: str  # folder inside a mirror
    arch: str


REGISTRY: dict[str, WeightsEntry] = {
    f"resnet{d}-cifar10": WeightsEntry(f"resnet{d}-{h[:8]}.th", _AKAMASTER + f"resnet{d}-{h[:8]}.th", h, "cifar10", f"resnet{d}")
    for d, h in [
        (20, "12fca82f0bebc4135bf1f32f6e3710e61d5108578464b84fd6d7f5c1b04036c8"),
        (32, "d509ac1820d7f25398913559d7e81a13229b1e7adc5648e3bfa5e22dc137f850"),
        (44, "014dd6541728a1c700b1642ab640e211dc6eb8ed507d70697458dc8f8a0ae2e4"),
        (56, "4bfd97631478d6b638d2764fd2baff3edb1d7d82252d54439343b6596b9b5367"),
    ]
}
# ResNet-110 exists upstream (resnet110-1d1ed7c2.th); its full hash is not recorded here, so it is
# loaded by path (see configs/cifar10_paper_gpu.yaml) rather than by registry name.


class CheckpointMismatchError(RuntimeError):
    """A state_dict does not fit the architecture it is loaded into."""


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve(name: str) -> Path:
    """Local path of registered weights ``name``, downloading (hash-checked) when not found locally."""
    if name not in REGISTRY:
        raise KeyError(f"unknown weights {name!r}; registered: {', '.join(sorted(REGISTRY))}, or give a file path")
    entry = REGISTRY[name]
    candidates = []
    if os.environ.get("HKT_WEIGHTS_DIR"):
        mirror = Path(os.environ["HKT_WEIGHTS_DIR"])
        candidates += [mirror / entry.subdir / entry.file, mirror / entry.file]
    cached = Path(torch.hub.get_dir()) / "checkpoints" / entry.file
    candidates.append(cached)
    for path in candidates:
        if path.is_file():
            if sha256_of(path) != entry.sha256:
                raise RuntimeError(f"{path} does not match the SHA-256 of {name} ({entry.sha256[:12]}…); delete or replace it")
            return path
    cached.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(entry.url, str(cached), hash_prefix=entry.sha256, progress=True)
    except Exception as e:  # offline, proxy, moved URL...
        raise RuntimeError(
            f"weights {name!r} are not available locally and could not be downloaded from {entry.url} ({e}). "
            f"Put {entry.file} in $HKT_WEIGHTS_DIR/{entry.subdir}/ (an offline mirror) or in {cached.parent}."
        ) from e
    return cached


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a state_dict from a ``.safetensors`` file or a torch checkpoint (``weights_only=True``).

    Accepts a bare state_dict or a dict holding one under ``state_dict``/``model``; strips a ``module.``
    prefix (DataParallel checkpoints); from an ``hkt fit`` checkpoint it takes the trained child.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        sd = load_safetensors(path, "weights file")
    else:
        obj = load_torch(path, "weights file")
        sd = obj.get("state_dict", obj.get("model", obj)) if isinstance(obj, dict) else obj
    if not isinstance(sd, dict):
        raise CheckpointMismatchError(f"{path} holds no state_dict")
    if any(k.startswith("method.child.") for k in sd):  # an hkt training checkpoint: take its child
        sd = {k.removeprefix("method.child."): v for k, v in sd.items() if k.startswith("method.child.")}
    return {k.removeprefix("module."): v for k, v in sd.items() if isinstance(v, Tensor)}


def load_into(model: nn.Module, state_dict: dict[str, Tensor], source: str = "checkpoint", head: tuple[str, ...] = ()) -> nn.Module:
    """Load strictly; on a mismatch list missing/unexpected keys and shape clashes in one error. Weights under the
    module paths ``head`` (a classifier) whose shapes differ are the only exception: a pretrained model trained for
    another class count keeps its fresh head for this dataset's classes (logged)."""
    own = model.state_dict()
    replaced = sorted(
        k for k in own if k in state_dict and own[k].shape != state_dict[k].shape and any(k.startswith(h + ".") for h in head)
    )
    if replaced:
        state_dict = {**{k: v for k, v in state_dict.items() if k not in replaced}, **{k: own[k] for k in replaced}}
        logging.getLogger("hkt").info(
            "%s: head replaced for this dataset's classes (%s start from random values)", source, ", ".join(replaced)
        )
    # checkpoints written before PyTorch 0.4.1 have no BatchNorm step counters; they carry no weights
    state_dict = {**{k: v for k, v in own.items() if k.endswith("num_batches_tracked")}, **state_dict}
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    shapes = [
        f"{k}: {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and own[k].shape != state_dict[k].shape
    ]
    if missing or unexpected or shapes:

        def brief(keys: list[str]) -> str:
            return ", ".join(keys[:8]) + (f" … (+{len(keys) - 8})" if len(keys) > 8 else "")

        raise CheckpointMismatchError(
            f"{source} does not fit {type(model).__name__}: "
            + "; ".join(
                part
                for part in [
                    f"missing keys: {brief(missing)}" if missing else "",
                    f"unexpected keys: {brief(unexpected)}" if unexpected else "",
                    f"shape mismatches: {brief(shapes)}" if shapes else "",
                ]
                if part
            )
            + ". Check that the architecture (depth, width, classes) matches the checkpoint."
        )
    model.load_state_dict(state_dict)
    return model


def load_weights(model: nn.Module, weights: str | Path, head: tuple[str, ...] = ()) -> nn.Module:
    """Load registered weights (by name) or a file (by path) into ``model``; ``head``: see ``load_into``."""
    path = resolve(str(weights)) if str(weights) in REGISTRY else Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist; give a registered name ({', '.join(sorted(REGISTRY))}) or a file")
    return load_into(model, read_state_dict(path), str(path), head)
