"""Ship the child alone: ``state_dict`` as safetensors and a TorchScript module, each checked to reproduce
the in-wrapper child's output on a real batch before anything is reported as exported."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor, nn
from torch.utils import _pytree as pytree

from hkt.io import load_safetensors, write_with
from hkt.methods.base import Method
from hkt.models.weights import load_into


class ExportMismatchError(RuntimeError):
    """An exported artefact does not reproduce the trained child's output."""


def export(method: Method, fresh_child: nn.Module, example: Tensor, out_dir: str | Path, atol: float = 0.0) -> dict[str, object]:
    """Write ``child.safetensors`` and ``child.torchscript.pt`` to ``out_dir`` and verify both.

    Args:
        method: the trained method (the child inside it is the reference).
        fresh_child: a newly built child of the same architecture (receives the exported weights).
        example: an input batch (``(B, C, H, W)``; ``(B, 2, 3, H, W)`` pairs for flow).
    Returns: paths, parameter count and the max output difference of each artefact (0.0 expected).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    child = method.export_child()
    with torch.no_grad():
        reference = method.eval().child(example)
    state = {k: v.detach().contiguous() for k, v in child.state_dict().items()}
    st_path, ts_path = out / "child.safetensors", out / "child.torchscript.pt"
    write_with(st_path, lambda p: save_file(state, p))
    with torch.no_grad():
        scripted = torch.jit.trace(child, example)
    write_with(ts_path, lambda p: torch.jit.save(scripted, p))

    reloaded = load_into(fresh_child, load_safetensors(st_path), str(st_path)).eval()
    loaded_ts = torch.jit.load(str(ts_path))

    def max_diff(output: Any) -> float:  # outputs may be nested (RAFT: a list of flows, one per iteration)
        pairs = zip(pytree.tree_leaves(output), pytree.tree_leaves(reference))
        return max((a - b).abs().max().item() for a, b in pairs)

    with torch.no_grad():
        diffs = {"safetensors": max_diff(reloaded(example)), "torchscript": max_diff(loaded_ts(example))}
    bad = {k: d for k, d in diffs.items() if d > atol}
    if bad:
        raise ExportMismatchError(f"exported child differs from the trained child: max |diff| {bad}")
    return {
        "safetensors": str(st_path),
        "torchscript": str(ts_path),
        "params": sum(p.numel() for p in reloaded.parameters()),
        "max_abs_diff": diffs,
    }
