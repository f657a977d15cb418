"""Entry points behind ``hkt fit``, ``hkt test`` and ``hkt export``: build everything from a validated
config, fail on bad input before training starts, and write results atomically."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from hkt.methods import build_method
from hkt.tasks import Task, build_task
from hkt.training.checkpoint_io import AtomicCheckpointIO, write_atomic
from hkt.training.history import History
from hkt.training.module import MethodModule


def task_of(cfg: dict[str, Any]) -> Task:
    options = dict(cfg["task"])
    return build_task(options.pop("name"), **options)


def build(cfg: dict[str, Any]) -> tuple[Any, MethodModule]:
    """Data module (set up, so missing data fails here) and the LightningModule for ``cfg``."""
    task = task_of(cfg)
    data = task.data_class(**cfg["data"], train_seed=cfg["seed"])
    data.setup()
    nets = {role: task.build_net(cfg[role], data) for role in ("parent", "child") if cfg[role].get("arch")}
    options = dict(cfg["method"])
    method = build_method(options.pop("name"), nets["child"], nets.get("parent"), data.example_input(), task, **options)
    return data, MethodModule(method, task, data, **cfg["optim"])


def _loggers(out: Path) -> list[Any]:
    loggers: list[Any] = [CSVLogger(str(out), name="logs", version="")]
    try:
        from lightning.pytorch.loggers import TensorBoardLogger

        import tensorboard  # noqa: F401

        loggers.append(TensorBoardLogger(str(out), name="tb", version=""))
    except ImportError:
        pass
    return loggers


def make_trainer(cfg: dict[str, Any]) -> tuple[L.Trainer, ModelCheckpoint, History]:
    out = Path(cfg["out_dir"])
    ckpt_dir = out / "checkpoints"
    task = task_of(cfg)
    best = ModelCheckpoint(ckpt_dir, filename="best", monitor=task.monitor, mode=task.mode, save_top_k=1, enable_version_counter=False)
    # every epoch, whatever the validation score: what --resume continues from
    last = ModelCheckpoint(ckpt_dir, filename="last", save_top_k=1, enable_version_counter=False)
    history = History(out / "history.json")
    trainer = L.Trainer(
        default_root_dir=str(out),
        logger=_loggers(out),
        callbacks=[best, last, history],
        plugins=[AtomicCheckpointIO()],
        **cfg["trainer"],
    )
    return trainer, best, history


def fit(cfg: dict[str, Any], resume: bool = False) -> dict[str, Any]:
    """Train, select on validation, test once; returns (and writes ``out_dir/result.json``) the record."""
    L.seed_everything(cfg["seed"], workers=True, verbose=False)
    out = Path(cfg["out_dir"])
    last = out / "checkpoints" / "last.ckpt"
    if (out / "result.json").exists() and not resume:
        raise FileExistsError(f"{out} already holds a finished run; pass --resume to continue it or choose another out_dir")
    data, module = build(cfg)
    trainer, best, history = make_trainer(cfg)
    start = time.perf_counter()
    trainer.fit(module, datamodule=data, ckpt_path=str(last) if resume and last.is_file() else None, weights_only=True)
    wall = time.perf_counter() - start
    summary = history.summary()  # before testing: loading the best checkpoint restores callback state too
    # one dict per test loader (flow has several evaluation sets, each with its own metric names)
    test_last = {k: v for d in trainer.test(module, datamodule=data, verbose=False) for k, v in d.items()}
    best_path = best.best_model_path
    test_best = {k: v for d in trainer.test(module, datamodule=data, ckpt_path=best_path, verbose=False, weights_only=True) for k, v in d.items()}
    record = {
        "config": cfg,
        "data": data.describe(),
        "best_epoch": int(torch.load(best.best_model_path, map_location="cpu", weights_only=True)["epoch"]),
        # flat keys: val/acc -> val_acc_best, test/acc -> test_acc (best epoch) and test_acc_last_epoch
        f"{best.monitor.replace('/', '_')}_best": float(best.best_model_score) if best.best_model_score is not None else None,
        **{k.replace("/", "_"): v for k, v in test_best.items()},
        **{f"{k.replace('/', '_')}_last_epoch": v for k, v in test_last.items()},
        "fit_wall_s": wall,
        "child_params": sum(p.numel() for p in module.method.child.parameters()),
        **summary,
    }
    if trainer.is_global_zero:
        write_atomic(out / "result.json", json.dumps(record, indent=1, default=str))
    return record


def fit_or_resume(cfg: dict[str, Any]) -> dict[str, Any]:
    """The record of ``cfg``'s run: read when finished, else resumed from its last epoch or started."""
    out = Path(cfg["out_dir"])
    if (out / "result.json").is_file():
        return json.loads((out / "result.json").read_text())
    return fit(cfg, resume=(out / "checkpoints" / "last.ckpt").is_file())


def load_trained(cfg: dict[str, Any], ckpt: str = "best") -> tuple[Any, MethodModule]:
    """Rebuild the run of ``cfg`` and load its ``best``/``last`` checkpoint (or a checkpoint path)."""
    data, module = build(cfg)
    path = Path(cfg["out_dir"]) / "checkpoints" / f"{ckpt}.ckpt" if ckpt in ("best", "last") else Path(ckpt)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; run `hkt fit` first or pass --ckpt PATH")
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    module.load_state_dict(state)
    return data, module


def test(cfg: dict[str, Any], ckpt: str = "best") -> dict[str, float]:
    data, module = load_trained(cfg, ckpt)
    trainer = L.Trainer(logger=False, enable_checkpointing=False, accelerator=cfg["trainer"].get("accelerator", "auto"), devices=1)
    return {k: v for d in trainer.test(module, datamodule=data, verbose=True) for k, v in d.items()}  # all test sets
