"""Ship the child alone, in the formats deployment stacks take, each verified on a real batch before it is
reported as exported:

- ``child.safetensors``: the ``state_dict`` (load into a fresh model of the same architecture); bit-identical;
- ``child.onnx``: ``torch.onnx.export(..., dynamo=True)`` with a dynamic batch (and H×W for dense tasks where the
  model allows), run under onnxruntime: max |diff| ≤ 1e-4;
- ``child.pt2``: a ``torch.export`` ExportedProgram (``torch.export.load``; ExecuTorch starts from it): ≤ 1e-5;

A format the model cannot be exported to is reported with the reason, and the others are still written. A parity
failure fails the export. The report (paths, differences, thresholds, failures) is written to ``export.json``.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor, nn
from torch.utils import _pytree as pytree

from hkt.io import load_safetensors, write_atomic, write_with
from hkt.methods.base import Method
from hkt.models.weights import load_into

FORMATS = ("safetensors", "onnx", "pt2")
DEFAULT_FORMATS = ("safetensors", "onnx", "pt2")
TOLERANCE = {"safetensors": 0.0, "onnx": 1e-4, "pt2": 1e-5}
FILES = {"safetensors": "child.safetensors", "onnx": "child.onnx", "pt2": "child.pt2"}


class ExportMismatchError(RuntimeError):
    """An exported artefact does not reproduce the trained child's output."""


def _leaves(output: Any) -> list[Tensor]:
    return [t for t in pytree.tree_leaves(output) if isinstance(t, Tensor)]


def _max_diff(output: Any, reference: Any) -> float:
    """Largest absolute difference over all tensors of (possibly nested) outputs (RAFT: one flow per iteration)."""
    got, want = _leaves(output), _leaves(reference)
    if len(got) != len(want):
        return float("inf")
    return max(float((torch.as_tensor(a).float() - b.float()).abs().max()) for a, b in zip(got, want))


def dynamic_shapes(example: Tensor, spatial: bool) -> tuple[dict[int, Any], ...]:
    """Batch always dynamic; H and W (the last two dims) too for dense tasks."""
    dims = {0: torch.export.Dim.DYNAMIC}
    if spatial:
        dims.update({example.dim() - 2: torch.export.Dim.DYNAMIC, example.dim() - 1: torch.export.Dim.DYNAMIC})
    return (dims,)


Runner = tuple[Callable[[Tensor], Any], str | None]  # runs the written artefact; a note on how it was written


def _safetensors(child: nn.Module, fresh: nn.Module, example: Tensor, path: Path, spatial: bool) -> Runner:
    state = {k: v.detach().contiguous() for k, v in child.state_dict().items()}
    write_with(path, lambda p: save_file(state, p))
    return load_into(fresh, load_safetensors(path), str(path)).eval(), None


def _pt2(child: nn.Module, fresh: nn.Module, example: Tensor, path: Path, spatial: bool) -> Runner:
    with torch.no_grad():
        program = torch.export.export(child, (example,), dynamic_shapes=dynamic_shapes(example, spatial))

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: the temporary name does not end in .pt2
            torch.export.save(program, f)

    write_with(path, write)
    return torch.export.load(str(path)).module(), None


def _onnx(child: nn.Module, fresh: nn.Module, example: Tensor, path: Path, spatial: bool) -> Runner:
    import onnxruntime as ort

    note: list[str] = []

    def convert(optimize: bool) -> Any:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's progress chatter; failures still raise
            return torch.onnx.export(
                child, (example,), dynamo=True, dynamic_shapes=dynamic_shapes(example, spatial), verbose=False, optimize=optimize
            )

    def write(tmp: str) -> None:
        try:
            program = convert(optimize=True)
        except Exception as e:  # noqa: BLE001 — e.g. RAFT: constant folding fails on a SplitToSequence node
            root = e
            while root.__cause__ or root.__context__:
                root = root.__cause__ or root.__context__
            note.append(f"written without the ONNX graph optimiser, which failed ({type(root).__name__}: {str(root)[:120]})")
            program = convert(optimize=False)
        program.save(tmp, external_data=False)

    write_with(path, write)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return (lambda x: [torch.from_numpy(a) for a in session.run(None, {name: x.detach().cpu().numpy()})]), (note[0] if note else None)


WRITERS = {"safetensors": _safetensors, "onnx": _onnx, "pt2": _pt2}


def export(
    method: Method | nn.Module,
    fresh_child: nn.Module,
    example: Tensor,
    out_dir: str | Path,
    formats: Sequence[str] = DEFAULT_FORMATS,
    spatial: bool = False,
) -> dict[str, Any]:
    """Export the trained child in ``formats`` to ``out_dir`` and verify each on ``example``.

    Args:
        method: the trained method (its child is the reference), or a child module itself.
        fresh_child: a newly built child of the same architecture (receives the safetensors weights).
        example: a real input batch, ``(B, C, H, W)`` (``(B, 2, 3, H, W)`` pairs for flow), B ≥ 2: parity is also
            checked on its first ``B - 1`` samples, which exercises the dynamic batch dimension.
        spatial: also make H and W dynamic (segmentation, flow).
    Returns: the report also written to ``out_dir/export.json``: per format its path and max |diff| on the
        full and the smaller batch (or the error that stopped it), the tolerance, and the parameter count.
    Raises: ``ExportMismatchError`` when a written format exceeds its tolerance (after writing the report).
    """
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ValueError(f"unknown export format(s) {unknown or '(none)'}; choose from {', '.join(FORMATS)}")
    if example.shape[0] < 2:
        raise ValueError("export needs an example batch of at least 2 samples (parity is checked on two batch sizes)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    child = method.export_child() if isinstance(method, Method) else method.eval()
    smaller = example[: example.shape[0] - 1]
    with torch.no_grad():
        reference, reference_small = child(example), child(smaller)
    report: dict[str, Any] = {"params": sum(p.numel() for p in child.parameters()), "batch": list(example.shape), "formats": {}}
    for fmt in formats:
        path = out / FILES[fmt]
        try:
            runner, note = WRITERS[fmt](child, fresh_child, example, path, spatial)
            with torch.no_grad():
                diffs = [_max_diff(runner(example), reference), _max_diff(runner(smaller), reference_small)]
        except Exception as e:  # noqa: BLE001 — any exporter failure is reported per format, the others go on
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            report["formats"][fmt] = {"ok": False, "error": f"{type(e).__name__}: {reason}"}
            continue
        report["formats"][fmt] = {
            "ok": max(diffs) <= TOLERANCE[fmt],
            "path": str(path),
            "max_abs_diff": max(diffs),
            "max_abs_diff_by_batch": {str(example.shape[0]): diffs[0], str(smaller.shape[0]): diffs[1]},
            "tolerance": TOLERANCE[fmt],
            **({"note": note} if note else {}),
        }
    write_atomic(out / "export.json", json.dumps(report, indent=1) + "\n")
    bad = {f: r["max_abs_diff"] for f, r in report["formats"].items() if "max_abs_diff" in r and not r["ok"]}
    if bad:
        raise ExportMismatchError(
            f"exported child differs from the trained child beyond tolerance: {bad} (tolerances {TOLERANCE}); see {out / 'export.json'}"
        )
    return report


def failed_formats(report: dict[str, Any]) -> dict[str, str]:
    """``{format: reason}`` for the formats that could not be exported."""
    return {f: r["error"] for f, r in report["formats"].items() if "error" in r}
