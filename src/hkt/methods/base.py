"""The contract every training method follows (HKT and the baselines), so a comparison changes only
the method name: ``forward_train(x, y) -> (child_output, {loss name: scalar})``; the total loss is the
sum of the dict. The parent is frozen and in eval mode whatever ``.train()`` is called with.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hkt.core.extract import extracting
from hkt.core.gene import Gene
from hkt.core.outputs import drop_logits_hook, read_logits
from hkt.parent_cache import sync_device

TaskLoss = Callable[[Any, Any], Tensor]
DistillLoss = Callable[[Any, Any, float], Tensor]  # (child output, parent output, temperature) -> scalar


class Method(nn.Module):
    """Holds ``child`` (trained, deployed) and optionally ``parent`` (frozen, discarded after training).

    ``genes``: the (parent, child) blocks a feature method reads or mixes (empty for logit methods).
    ``needs_parent`` / ``needs_logits``: what the method needs to be built (a parent; class logits, not regression).
    ``uses_hooks`` (derived from ``genes``): the method reads genes through forward hooks during each step, so
    ``torch.compile`` cannot capture it.

    A Hugging Face model (whose forward returns a ``ModelOutput``) is read through its ``.logits``; another element
    is chosen with ``hkt.core.outputs.read_logits(model, element)`` before the method is built (configs:
    ``child.output``).

    Args:
        child: the network being trained; its architecture is what ships.
        parent: a pretrained network, or ``None`` for methods that need none.
        task_loss: ``(output, target) -> scalar`` (cross-entropy by default).
    """

    genes: list = []
    needs_parent: bool = True  # False for methods that train the child alone (``ce``)
    needs_logits: bool = False  # True for methods defined on class logits only (``dkd``, ``dist``): not for regression
    parent_cache: Any = None  # a hkt.parent_cache.ParentCache, attached by the training run (config parent_cache)

    def __init__(self, child: nn.Module, parent: nn.Module | None = None, task_loss: TaskLoss = F.cross_entropy) -> None:
        super().__init__()
        self.child = read_logits(child, role="child")
        self.parent = read_logits(parent, role="parent") if parent is not None else None
        self.task_loss = task_loss
        if parent is not None:
            parent.requires_grad_(False)
            parent.eval()

    def train(self, mode: bool = True) -> Method:
        super().train(mode)
        if self.parent is not None:
            self.parent.eval()  # BatchNorm statistics of the parent never drift
        return self

    @property
    def uses_hooks(self) -> bool:
        return bool(self.genes)

    def forward(self, x: Any) -> Any:
        """Inference: the child alone."""
        return self.child(x)

    def forward_train(self, x: Any, y: Any) -> tuple[Any, dict[str, Tensor]]:
        raise NotImplementedError

    def parent_cache_plan(self, example: Tensor) -> str | None:
        """Why the parent cache cannot serve this method, or ``None`` when it can. Here it always can: every parent
        read goes through :meth:`read_parent`."""
        return None

    def read_parent(self, x: Any, genes: Sequence[Gene] = ()) -> tuple[Any, dict[str, Tensor]]:
        """The frozen parent's output on batch ``x`` and its side of ``genes`` (``{parent path: feature}``), without
        gradient: from the parent cache when one is attached and holds this batch, else computed (and stored, with
        the cache's extra genes)."""
        cache = self.parent_cache if isinstance(x, Tensor) else None
        paths = [g.parent for g in genes]
        if cache is not None:
            hit = cache.get(x, paths)
            if hit is not None:
                return hit
            genes = cache.genes_to_read(genes)
        start = time.perf_counter()
        with torch.no_grad():
            if genes:
                with extracting(self.parent, genes, "parent") as pf:
                    out = self.parent(x)
                feats = dict(pf)
            else:
                out, feats = self.parent(x), {}
        if cache is None:
            return out, feats
        sync_device(x)
        out, feats = cache.put(x, out, feats, time.perf_counter() - start)
        return out, {p: feats[p] for p in paths}

    def learnable_parameters(self) -> list[nn.Parameter]:
        """What the optimiser owns: everything except the parent."""
        return [p for n, p in self.named_parameters() if not n.startswith("parent.") and p.requires_grad]

    def log_values(self) -> dict[str, Tensor]:
        """Extra scalars to log after a training step (e.g. gate values)."""
        return {}

    def on_train_step(self, step: int, total_steps: int, epoch: int) -> None:
        """Called before each training step (0-based ``step`` of ``total_steps``, 0-based ``epoch``): where
        schedules inside a method (DKD's warm-up, a gate schedule) read the progress of training."""

    def export_child(self) -> nn.Module:
        """A standalone copy of the child: same class and state_dict keys, no hooks, no adapters (a Hugging Face
        model returns its own ``ModelOutput`` again)."""
        child = drop_logits_hook(copy.deepcopy(self.child)).eval()
        for m in child.modules():
            if m._forward_hooks or m._forward_pre_hooks or m._backward_hooks:
                raise RuntimeError(f"hook left on child module {type(m).__name__}; export is only valid outside a step")
        return child


LS_SOURCE = "Sun et al., CVPR 2024; sunshangquan/logit-standardization-KD README: --logit-stand --base-temp 2 --kd-weight 9"


def logit_recipe(
    method: str, enabled: bool, given: dict[str, float | None], plain: dict[str, float], recipe: dict[str, float]
) -> dict[str, float]:
    """Each option of ``given`` the user left at ``None`` takes its ``plain`` default, or with logit standardisation
    (``enabled``) the authors' recipe (T 2, KD weight 9, CE 0.1 for KD; DKD's alpha, beta x 9); the values used with
    standardisation are logged."""
    values = {k: (v if v is not None else (recipe if enabled else plain)[k]) for k, v in given.items()}
    if enabled:
        shown = ", ".join(f"{k}={values[k]:g}" + ("" if given[k] is not None else " (recipe)") for k in values)
        logging.getLogger("hkt").info("%s with logit standardisation: %s [%s]", method, shown, LS_SOURCE)
    return values


def warmup_factor(warmup: float, unit: str, step: int, epoch: int) -> float:
    """The distillation weight's linear warm-up of DKD and ReviewKD: ``min(e / warmup, 1)`` with ``e`` the
    1-based epoch (the authors' code) or the 1-based step; 1 when ``warmup`` is 0."""
    if warmup <= 0:
        return 1.0
    return min(((epoch if unit == "epochs" else step) + 1) / warmup, 1.0)


WarmupUnit = Literal["epochs", "steps"]


class WarmedUp:
    """Mixin of DKD and ReviewKD: their distillation weight's linear warm-up. ``self.warm`` is
    :func:`warmup_factor` at the current step (set by ``on_train_step``), logged as ``warmup/<warm_name>``."""

    warmup: float
    warmup_unit: WarmupUnit
    warm_name: str

    @property
    def warm(self) -> float:
        return getattr(self, "_warm", warmup_factor(self.warmup, self.warmup_unit, 0, 0))

    def on_train_step(self, step: int, total_steps: int, epoch: int) -> None:
        self._warm = warmup_factor(self.warmup, self.warmup_unit, step, epoch)

    def log_values(self) -> dict[str, Tensor]:
        return {f"warmup/{self.warm_name}": torch.tensor(self.warm)}
