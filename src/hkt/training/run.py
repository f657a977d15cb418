"""Entry points behind ``hkt fit``, ``hkt test`` and ``hkt export``: build everything from a validated
config, fail on bad input before training starts, and write results atomically."""

from __future__ import annotations

import inspect
import json
import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from hkt.core.outputs import read_logits
from hkt.io import RunLock, kill_point, load_torch, read_json, write_atomic
from hkt.io.lock import is_secondary_rank
from hkt.methods import INTERNAL, METHODS, build_method
from hkt.parent_cache import GB, ParentCache, parent_fingerprint, stored_bytes
from hkt.tasks import Task, build_task
from hkt.training.checkpoint_io import AtomicCheckpointIO
from hkt.training.fast_path import channels_last, check_precision, compile_nets
from hkt.training.history import History
from hkt.training.kill_points import KillPoints
from hkt.training.metrics_log import MetricsCSV
from hkt.training.module import MethodModule, NonFiniteLossError
from hkt.training.progress import EpochBar

log = logging.getLogger("hkt")


def task_of(cfg: dict[str, Any]) -> Task:
    options = dict(cfg["task"])
    return build_task(options.pop("name"), **options)


def describe_run(cfg: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint was trained as: enough to name the difference when it is loaded under another config."""
    return {
        "task": cfg["task"]["name"],
        "method": cfg["method"]["name"],
        "child": cfg["child"].get("arch"),
        "child_width": cfg["child"].get("width"),
        "parent": cfg["parent"].get("arch"),
    }


def build(cfg: dict[str, Any]) -> tuple[Any, MethodModule]:
    """Data module (set up, so missing data fails here) and the LightningModule for ``cfg``."""
    task = task_of(cfg)
    data = task.data_for(cfg["data"])(**cfg["data"], train_seed=cfg["seed"])
    data.setup()
    built = {role: task.build_net(cfg[role], data) for role in ("parent", "child") if cfg[role].get("arch")}
    # the loader feeds the child's input settings; a parent that wants another normalisation converts on entry
    parent_input = data.fit_to(built["child"], built.get("parent"))
    nets = {role: read_logits(net, cfg[role].get("output"), role) for role, net in built.items()}
    if parent_input is not None:
        nets["parent"].register_forward_pre_hook(parent_input)
    options = dict(cfg["method"])
    # 8 images, not 2: the engine rehearsal compares BatchNorm outputs, and over 2 samples at a late stage's 1x1 grid
    # (an EfficientNet child at 32 px) the batch variance is so ill-conditioned that float32 rounding alone moves the
    # outputs past any tolerance, and the one pass was refused for it (float64, or 8 samples, agree)
    example = data.example_input(8)
    method = build_method(options.pop("name"), nets["child"], nets.get("parent"), example, task, **options)
    check_precision(cfg["trainer"])
    if cfg["channels_last"]:
        channels_last(method, example)
    if cfg["compile"]:
        compile_nets(method)
    if cfg["parent_cache"] is not None:
        attach_parent_cache(method, cfg, data, example)
    return data, MethodModule(method, task, data, **cfg["optim"], run=describe_run(cfg), channels_last=cfg["channels_last"])


def attach_parent_cache(method: Any, cfg: dict[str, Any], data: Any, example: Any) -> None:
    """Serve ``method``'s parent reads from the cache of ``cfg["parent_cache"]``; fails before training when the
    cache cannot be read (``read_only``) or the run's estimated shards would pass ``max_gb``."""
    options = cfg["parent_cache"]
    if method.parent is None:
        return
    reason = method.parent_cache_plan(example) if isinstance(example, torch.Tensor) else "its inputs are not one tensor"
    if reason is not None:
        log.info("parent_cache: not used for method %s: %s", cfg["method"]["name"], reason)
        return
    cache = ParentCache(
        options["dir"],
        method.parent,
        options.get("store") or (),
        options.get("read_only", False),
        options.get("max_gb"),
        options.get("fp16", False),
    )
    out, feats = method.read_parent(example, cache.genes_to_read(method.genes))  # one shard's contents, uncached
    per_batch = stored_bytes(out, feats, cache.fp16) * data.batch_size // example.shape[0]
    batches = len(data.train_dataloader()) * int(cfg["trainer"].get("max_epochs") or 1)
    cache.check_budget(per_batch, batches, list(feats))
    method.parent_cache = cache
    log.info(
        "parent_cache: %s, storing %s; %.2f MB per batch, up to %d batches (%.2f GB) this run",
        cache.dir,
        ", ".join(["the output", *feats]),
        per_batch / 2**20,
        batches,
        per_batch * batches / GB,
    )


class CheckpointConfigMismatchError(ValueError):
    """A checkpoint was trained under another configuration (method, architecture) than the one given."""


def check_checkpoint(module: MethodModule, ckpt: dict[str, Any], path: Path) -> None:
    """Fail with one readable line when ``ckpt`` cannot be loaded into ``module``, or holds non-finite values."""
    state = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise CheckpointConfigMismatchError(
            f"{path} is not an hkt training checkpoint (no state_dict); pass a checkpoint written by `hkt fit`"
        )
    own = module.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    shapes = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or shapes:
        theirs, mine = (ckpt.get("hkt") or {}).get("run"), module.run_info
        if theirs and theirs != mine:
            diff = ", ".join(f"{k}: checkpoint {theirs.get(k)!r}, config {mine.get(k)!r}" for k in mine if theirs.get(k) != mine.get(k))
            raise CheckpointConfigMismatchError(f"{path} was trained with another config ({diff}); pass the config it was trained with")
        raise CheckpointConfigMismatchError(
            f"{path} does not fit this config: {len(missing)} missing, {len(unexpected)} unexpected, {len(shapes)} reshaped "
            f"tensors (e.g. {(missing + unexpected + shapes)[:3]}); pass the config it was trained with"
        )
    trained_with = ((ckpt.get("hkt") or {}).get("optim") or {}).get("optimizer", module.optimizer)
    if trained_with != module.optimizer:
        raise CheckpointConfigMismatchError(
            f"{path} was trained with optim.optimizer={trained_with!r}, the config says {module.optimizer!r}; an optimiser's "
            "state cannot be carried over to another optimiser. Keep the optimizer or start a new run"
        )
    bad = [k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointConfigMismatchError(f"{path} holds non-finite values ({', '.join(bad[:3])}); it cannot be used. Restart the run.")


def _loggers(out: Path) -> list[Any]:
    loggers: list[Any] = [MetricsCSV(out)]
    try:
        import tensorboard  # noqa: F401
        from lightning.pytorch.loggers import TensorBoardLogger

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
    loggers = _loggers(out)
    history = History(out / "history.json", loggers[0])
    bar = [EpochBar()] if cfg["trainer"].get("enable_progress_bar", True) else []
    trainer = L.Trainer(
        default_root_dir=str(out),
        logger=loggers,
        callbacks=[best, last, history, KillPoints(), *bar],
        plugins=[AtomicCheckpointIO()],
        **cfg["trainer"],
    )
    return trainer, best, history


def _rotate_logs(out: Path) -> None:
    """Keep the interrupted run's ``metrics.csv`` as ``metrics.<n>.csv``; the resumed run's ``metrics.csv`` starts
    from the rows its checkpoint carries (``History``), so it holds every epoch in order."""
    csv = out / "logs" / "metrics.csv"
    if not csv.is_file():
        return
    n = 1
    while (csv.parent / f"metrics.{n}.csv").exists():
        n += 1
    csv.rename(csv.parent / f"metrics.{n}.csv")


def resolved_options(cfg: dict[str, Any], method: Any) -> dict[str, Any]:
    """The method's options as it runs: the values it holds (defaults and recipes resolved), else the config's."""
    params = inspect.signature(METHODS[cfg["method"]["name"]].__init__).parameters
    out = {}
    for name, param in params.items():
        if name in INTERNAL or param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
            continue
        held = getattr(method, name, None)
        value = held if isinstance(held, (bool, int, float, str)) else cfg["method"].get(name, param.default)
        out[name] = value
    return out


def _start_line(cfg: dict[str, Any], module: MethodModule) -> str:
    method = module.method
    options = resolved_options(cfg, method)
    trainable = sum(p.numel() for p in method.learnable_parameters())
    child = sum(p.numel() for p in method.child.parameters() if p.requires_grad)
    parent = f"parent {cfg['parent']['arch']} -> " if cfg["parent"].get("arch") else ""
    return (
        f"fit {cfg['out_dir']}: {cfg['task']['name']}, {parent}child {cfg['child']['arch']}, method {cfg['method']['name']}"
        f"{' ' + json.dumps(options, default=str) if options else ''}; {trainable:,} trainable parameters ({child:,} child, "
        f"{trainable - child:,} training-only)"
    )


def _advice(out: Path, cfg: dict[str, Any]) -> str:
    """What to do after a divergence: resume from the last checkpoint when there is one, else start again."""
    last = out / "checkpoints" / "last.ckpt"
    lower = f"optim.lr={cfg['optim']['lr'] / 10:g}"
    if last.is_file():
        done = int(load_torch(last, "checkpoint").get("epoch", 0)) + 1  # epochs finished (the checkpoint counts from 0)
        return (
            f"The last good checkpoint (end of epoch {done}) is kept: resume from epoch {done + 1} with a lower learning "
            f"rate, e.g. rerun the same command with --resume {lower}"
        )
    return (
        f"No epoch had finished, so there is no checkpoint to resume: start again with a lower learning rate, e.g. "
        f"rerun the same command with {lower} (without --resume)"
    )


def _same_run(recorded: dict[str, Any], cfg: dict[str, Any]) -> bool:
    """Whether a finished run's recorded config is ``cfg``, wherever the folder now lies (``out_dir`` aside)."""
    now = json.loads(json.dumps(cfg, default=str))
    return {k: v for k, v in recorded.items() if k != "out_dir"} == {k: v for k, v in now.items() if k != "out_dir"}


def fit(cfg: dict[str, Any], resume: bool = False, evaluate_test: bool = True) -> dict[str, Any]:
    """Train, select on validation, test once; returns (and writes ``out_dir/result.json``) the record.

    Holds ``out_dir``'s lock for the whole run: a second process on the same ``out_dir`` fails at once.
    ``evaluate_test=False`` (hyperparameter search) never touches the test split."""
    with RunLock(cfg["out_dir"]):
        return _fit(cfg, resume, evaluate_test)


def _fit(cfg: dict[str, Any], resume: bool, evaluate_test: bool = True) -> dict[str, Any]:
    L.seed_everything(cfg["seed"], workers=True, verbose=False)
    out = Path(cfg["out_dir"])
    last = out / "checkpoints" / "last.ckpt"
    finished = read_json(out / "result.json")  # None also when unreadable (named in the log): the run is then finished again
    if finished is not None and not resume:
        raise FileExistsError(f"{out} already holds a finished run; pass --resume to continue it or choose another out_dir")
    if finished is not None and _same_run(finished.get("config") or {}, cfg):
        log.info("%s already finished: %s (nothing retrained)", out, out / "result.json")
        return finished  # a changed config (more epochs, a lower lr) continues from last.ckpt instead
    if last.exists() and not resume:
        raise FileExistsError(f"{out} holds an interrupted run ({last}); pass --resume to continue it, or choose another out_dir")
    data, module = build(cfg)
    resumed_at = None
    if resume and last.is_file():
        # everything that can make a resume fail is checked before anything in out_dir changes
        ckpt = load_torch(last, "checkpoint")
        check_checkpoint(module, ckpt, last)
        resumed_at = int(ckpt.get("epoch", -1)) + 1
        if not is_secondary_rank():
            _rotate_logs(out)
    trainer, best, history = make_trainer(cfg)
    if trainer.is_global_zero:
        log.info(_start_line(cfg, module) + (f"; resuming at epoch {resumed_at + 1}" if resumed_at is not None else ""))
    start = time.perf_counter()
    try:
        trainer.fit(module, datamodule=data, ckpt_path=str(last) if resume and last.is_file() else None, weights_only=True)
    except NonFiniteLossError as e:
        raise NonFiniteLossError(f"{e}. {_advice(out, cfg)}") from None
    wall = time.perf_counter() - start
    kill_point("trained")  # every epoch done, nothing tested
    summary = history.summary()  # before testing: loading the best checkpoint restores callback state too
    test_last: dict[str, Any] = {}
    test_best: dict[str, Any] = {}
    if evaluate_test:  # one dict per test loader (flow has several evaluation sets, each with its own metric names)
        test_last = {k: v for d in trainer.test(module, datamodule=data, verbose=False) for k, v in d.items()}
        best_path = best.best_model_path
        test_best = {
            k: v for d in trainer.test(module, datamodule=data, ckpt_path=best_path, verbose=False, weights_only=True) for k, v in d.items()
        }
    kill_point("tested")
    record = {
        "config": cfg,
        "data": data.describe(),
        "best_epoch": int(load_torch(best.best_model_path)["epoch"]),
        # flat keys: val/acc -> val_acc_best, test/acc -> test_acc (best epoch) and test_acc_last_epoch
        f"{best.monitor.replace('/', '_')}_best": float(best.best_model_score) if best.best_model_score is not None else None,
        **{k.replace("/", "_"): v for k, v in test_best.items()},
        **{f"{k.replace('/', '_')}_last_epoch": v for k, v in test_last.items()},
        "fit_wall_s": wall,
        "child_params": sum(p.numel() for p in module.method.child.parameters()),
        # what the optimiser trained (child, adapters, GA weights, ReviewKD's ABF, ...): the deployed child is child_params
        "trainable_params": sum(p.numel() for p in module.method.learnable_parameters()),
        **summary,
    }
    if module.method.parent is not None:  # which parent, by content: a path or a name can hide another file
        record["parent_weights"] = parent_fingerprint(module.method.parent)["weights"]
    if module.method.parent_cache is not None:
        record["parent_cache"] = module.method.parent_cache.summary()
        log.info(
            "parent_cache: %(hits)d hits, %(misses)d misses, %(written_mb).1f MB written; %(dir)s holds %(size_mb).1f MB",
            record["parent_cache"],
        )
    if trainer.is_global_zero:
        write_atomic(out / "result.json", json.dumps(record, indent=1, default=str))
        log.info(_end_line(record, best.monitor, out))
    return record


def _end_line(record: dict[str, Any], monitor: str, out: Path) -> str:
    val = record.get(f"{monitor.replace('/', '_')}_best")
    tests = ", ".join(f"{k} {v:.4g}" for k, v in record.items() if k.startswith("test_") and not k.endswith("_last_epoch"))
    return (
        f"done in {record['fit_wall_s']:.0f} s: best epoch {record['best_epoch'] + 1} ({monitor} {val:.4g}"
        f"{'; ' + tests if tests else ''}); {out / 'result.json'}, checkpoints {out / 'checkpoints'}/{{best,last}}.ckpt"
    )


def fit_or_resume(cfg: dict[str, Any], evaluate_test: bool = True) -> dict[str, Any]:
    """The record of ``cfg``'s run: read when finished, else resumed from its last epoch or started. Raises
    ``RunLockedError`` when another process is on it."""
    out = Path(cfg["out_dir"])
    with RunLock(out):  # decided under the lock: another worker may have just finished it
        return _fit(cfg, True, evaluate_test)


def load_trained(cfg: dict[str, Any], ckpt: str = "best") -> tuple[Any, MethodModule]:
    """Rebuild the run of ``cfg`` and load its ``best``/``last`` checkpoint (or a checkpoint path)."""
    data, module = build(cfg)
    path = Path(cfg["out_dir"]) / "checkpoints" / f"{ckpt}.ckpt" if ckpt in ("best", "last") else Path(ckpt)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; run `hkt fit` first or pass --ckpt PATH")
    checkpoint = load_torch(path, "checkpoint")
    check_checkpoint(module, checkpoint, path)
    module.load_state_dict(checkpoint["state_dict"])
    return data, module


def test(cfg: dict[str, Any], ckpt: str = "best") -> dict[str, float]:
    data, module = load_trained(cfg, ckpt)
    trainer = L.Trainer(logger=False, enable_checkpointing=False, accelerator=cfg["trainer"].get("accelerator", "auto"), devices=1)
    return {k: v for d in trainer.test(module, datamodule=data, verbose=True) for k, v in d.items()}  # all test sets
