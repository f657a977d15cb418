"""Opt-in fast paths, each checked before training starts: ``channels_last`` (parent, child, adapters and input
batches in NHWC), ``compile`` (``torch.compile`` of child and parent) and bf16 precision (``trainer.precision:
bf16-mixed``, Lightning's autocast). Off by default where they change numerics (bf16, compile)."""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import Tensor, nn

from hkt.core.extract import dry_run
from hkt.methods import METHODS
from hkt.methods.base import Method


class FastPathError(ValueError):
    """A fast-path option cannot work for this run; the message names the key and the fix."""


def check_precision(trainer: dict[str, Any]) -> None:
    """bf16 needs hardware support on CUDA (CPUs run bf16 autocast everywhere, natively where AVX512-BF16/AMX exist)."""
    precision = str(trainer.get("precision", "32"))
    on_gpu = str(trainer.get("accelerator", "auto")) in ("gpu", "cuda") or (
        trainer.get("accelerator", "auto") == "auto" and torch.cuda.is_available()
    )
    if precision.startswith("bf16") and on_gpu and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        raise FastPathError(
            f"trainer.precision: {precision} needs a GPU with bfloat16 support ({torch.cuda.get_device_name()} has none); "
            "use trainer.precision: 16-mixed (with a loss scaler) or 32"
        )


def channels_last(method: Method, example: Any) -> None:
    """Convert parent, child and adapters to channels_last after checking that the inputs and every gene's
    activations are vectors or 4-D maps (NHWC means nothing for 5-D pairs or sequences)."""
    if not isinstance(example, Tensor) or example.dim() != 4:
        shape = tuple(example.shape) if isinstance(example, Tensor) else type(example).__name__
        raise FastPathError(f"channels_last: true needs 4-D (B, C, H, W) inputs; this task's inputs are {shape}. Set channels_last: false")
    if method.genes:  # the gene activations, from the dry run every feature method already uses
        run = dry_run(method.parent, method.child, method.genes, example[:2])
        for role, feats in (("child", run.child), ("parent", run.parent)):
            bad = {p: tuple(t.shape) for p, t in feats.items() if isinstance(t, Tensor) and t.dim() not in (2, 4)}
            if bad:
                raise FastPathError(
                    f"channels_last: true needs vector or 4-D activations at every gene; {role} genes give {bad}. Set channels_last: false"
                )
    method.to(memory_format=torch.channels_last)


def compile_nets(method: Method) -> None:
    """``torch.compile`` child and parent in place (state_dict keys unchanged), after checking that a compiler
    backend works here. Methods that register hooks during each step (hkt, fitnet, at, reviewkd) are refused: a
    compiled graph cannot follow hooks added and removed at every step, so it would recompile every step."""
    if method.uses_hooks:
        plain = sorted(m for m, c in METHODS.items() if "genes" not in inspect.signature(c).parameters)
        raise FastPathError(
            f"compile: true cannot speed up {type(method).__name__}: it reads (and, for hkt, mixes) genes through forward "
            "hooks registered at every step, which would make torch.compile recompile at every step. It works for the "
            f"methods without genes ({', '.join(plain)}). Set compile: false"
        )
    try:
        torch.compile(lambda t: t * 2 + 1)(torch.ones(2))
    except Exception as e:  # noqa: BLE001 — no C++ compiler, unsupported Python, missing Triton...
        raise FastPathError(
            f"compile: true, but torch.compile does not work here ({type(e).__name__}: {str(e).splitlines()[0][:160]}). Set compile: false"
        ) from None
    nets: list[nn.Module] = [method.child] + ([method.parent] if method.parent is not None else [])
    for net in nets:
        net.compile()
