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

from hkt.data.datamodule import ImageClassificationData
from hkt.methods import build_method
from hkt.models import build_model
from hkt.training.checkpoint_io import AtomicCheckpointIO, write_atomic
from hkt.training.history import History
from hkt.training.module import MethodModule


def build(cfg: dict[str, Any]) -> tuple[ImageClassificationData, MethodModule]:
    """Data module (set up, so missing data fails here) and the LightningModule for ``cfg``."""
    data = ImageClassificationData(**cfg["data"], train_seed=cfg["seed"])
    data.setup()
    nets = {}
    for role in ("parent", "child"):
        net = cfg[role]
        if net.get("arch"):
            nets[role] = build_model(net["arch"], data.num_classes, data.in_channels, net.get("width", 16), net.get("weights"))
    options = dict(cfg["method"])
    method = build_method(options.pop("name"), nets["child"], nets.get("parent"), data.example_input(), **options)
    return data, MethodModule(method, data.num_classes, **cfg["optim"])


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
    best = ModelCheckpoint(ckpt_dir, filename="best", monitor="val/acc", mode="max", save_top_k=1, enable_version_counter=False)
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
    test_last = trainer.test(module, datamodule=data, verbose=False)[0]["test/acc"]
    test_best = trainer.test(module, datamodule=data, ckpt_path=best.best_model_path, verbose=False, weights_only=True)[0]["test/acc"]
    record = {
        "config": cfg,
        "data": data.describe(),
        "best_epoch": int(torch.load(best.best_model_path, map_location="cpu", weights_only=True)["epoch"]),
        "val_acc_best": float(best.best_model_score) if best.best_model_score is not None else None,
        "test_acc": test_best,
        "test_acc_last_epoch": test_last,
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


def load_trained(cfg: dict[str, Any], ckpt: str = "best") -> tuple[ImageClassificationData, MethodModule]:
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
    return trainer.test(module, datamodule=data, verbose=True)[0]
