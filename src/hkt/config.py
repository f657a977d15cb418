"""Experiment configuration: YAML + dotted overrides, validated against the signatures of the objects it
builds, so an unknown or misspelt key fails at once with the closest valid key named.

Sections: ``seed``, ``out_dir``, ``channels_last`` and ``compile`` (fast paths, ``hkt.training.fast_path``),
``task`` (``name``: classification | segmentation | flow, + the task's options), ``data`` (the task's data module:
``ImageClassificationData``, ``SegmentationData``, ``FlowData``), ``parent`` and ``child`` (``arch``, ``weights``,
``width``; ``iterations`` for RAFT), ``method`` (``name`` + the method's options), ``optim`` (``MethodModule``:
optimizer, lr, momentum, weight_decay, nesterov, schedule), ``trainer`` (``lightning.Trainer`` arguments, passed
straight through: accelerator, devices, strategy, num_nodes, precision, max_epochs …),
``parent_cache`` (``{dir, max_gb, read_only, store, fp16}``: ``hkt.parent_cache``; off when null).
"""

from __future__ import annotations

import copy
import difflib
import inspect
import re
from pathlib import Path
from typing import Any

import yaml

from hkt.options import ConfigError, check_types


class _Loader(yaml.SafeLoader):
    """YAML 1.1 safe loading, plus YAML 1.2's floats: ``1e-3``, ``5E-4`` and ``1e12`` are numbers, not strings."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` that reads scientific notation as float."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)


DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "out_dir": "runs/default",
    "channels_last": False,
    "compile": False,
    "task": {"name": "classification"},
    "data": {},
    "parent": {"arch": None, "weights": None},
    "child": {"arch": "resnet20", "weights": None},
    "method": {"name": "ce"},
    "optim": {"lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4, "nesterov": False, "schedule": "cosine"},
    "trainer": {"max_epochs": 1, "accelerator": "cpu", "devices": 1},
    "parent_cache": None,
}
PARENT_CACHE_KEYS = {"dir", "max_gb", "read_only", "store", "fp16"}


def _keys_of(fn: Any, drop: tuple[str, ...] = ()) -> set[str]:
    return {p for p in inspect.signature(fn).parameters if p not in ("self", *drop)}


def _allowed(task: str, data: dict[str, Any]) -> dict[str, set[str]]:
    import lightning as L

    from hkt.tasks import TASKS
    from hkt.training.module import MethodModule

    if task not in TASKS:
        raise ConfigError(f"task.name must be one of {', '.join(TASKS)}, got {task!r}")
    return {
        "task": {"name"} | _keys_of(TASKS[task].__init__),
        "data": _keys_of(TASKS[task].data_for(data).__init__, ("train_seed",)),
        "parent": set(TASKS[task].net_keys),
        "child": set(TASKS[task].net_keys),
        "optim": _keys_of(MethodModule.__init__, ("method", "task", "data", "run", "channels_last")),
        "trainer": _keys_of(L.Trainer.__init__, ("callbacks", "plugins", "logger", "default_root_dir")),
    }


def _unknown(key: str, valid: set[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(key, sorted(valid), n=3)
    hint = (
        f" Did you mean {', '.join(close)}?"
        if close
        else f" Valid keys: {', '.join(sorted(valid))}."
        if valid
        else " This section takes no keys here."
    )
    return ConfigError(f"unknown config key '{where}{key}'.{hint}")


def _check_section_types(cfg: dict[str, Any]) -> None:
    import lightning as L

    from hkt.tasks import TASKS
    from hkt.training.module import MethodModule

    task = TASKS[cfg["task"]["name"]]
    check_types(cfg["task"], task.__init__, "task.")
    data_class = task.data_for(cfg["data"])
    check_types(cfg["data"], data_class.__init__, "data.")
    data_class.check(cfg["data"])
    check_types(cfg["optim"], MethodModule.__init__, "optim.")
    check_types(cfg["trainer"], L.Trainer.__init__, "trainer.")


def validate(cfg: dict[str, Any]) -> dict[str, Any]:
    """Raise ``ConfigError`` on unknown keys (with suggestions) or an unknown method; return ``cfg``."""
    from hkt.methods import INTERNAL, METHODS

    for key in cfg:
        if key not in DEFAULTS:
            raise _unknown(key, set(DEFAULTS), "")
    if not isinstance(cfg["task"], dict):
        raise ConfigError(f"config section 'task' must be a mapping like {{name: segmentation}}, got {cfg['task']!r}")
    if not isinstance(cfg["data"], dict):
        raise ConfigError(f"config section 'data' must be a mapping, got {cfg['data']!r}")
    for section, valid in _allowed(cfg["task"].get("name"), cfg["data"]).items():
        if not isinstance(cfg[section], dict):
            raise ConfigError(f"config section {section!r} must be a mapping, got {cfg[section]!r}")
        for key in cfg[section]:
            if key not in valid:
                raise _unknown(key, valid, f"{section}.")
    _check_section_types(cfg)
    method = dict(cfg["method"])
    name = method.pop("name", None)
    if name not in METHODS:
        raise ConfigError(f"method.name must be one of {', '.join(METHODS)}, got {name!r}")
    valid = _keys_of(METHODS[name].__init__, INTERNAL)
    for key in method:
        if key not in valid:
            raise _unknown(key, valid, "method.")
    check_types(method, METHODS[name].__init__, "method.")
    if not isinstance(cfg["seed"], int) or isinstance(cfg["seed"], bool):
        raise ConfigError(f"config key 'seed' must be an int, got {cfg['seed']!r}")
    for key in ("channels_last", "compile"):
        if not isinstance(cfg[key], bool):
            raise ConfigError(f"config key '{key}' must be true or false, got {cfg[key]!r}")
    if METHODS[name].needs_parent and not cfg["parent"].get("arch"):
        raise ConfigError(f"method {name!r} needs a parent: set parent.arch (and parent.weights)")
    _check_parent_cache(cfg["parent_cache"])
    return cfg


def _check_parent_cache(pc: Any) -> None:
    if pc is None:
        return
    example = "parent_cache: {dir: .cache/parent, max_gb: 50}"
    if not isinstance(pc, dict) or not isinstance(pc.get("dir"), str) or not pc["dir"]:
        raise ConfigError(f"parent_cache must be null or a mapping with a dir, e.g. {example}; got {pc!r}")
    for key in pc:
        if key not in PARENT_CACHE_KEYS:
            raise _unknown(key, PARENT_CACHE_KEYS, "parent_cache.")
    gb = pc.get("max_gb")
    if gb is not None and (not isinstance(gb, (int, float)) or isinstance(gb, bool) or gb <= 0):
        raise ConfigError(f"parent_cache.max_gb must be a positive number of GB (or null: no limit), got {gb!r}")
    for key in ("read_only", "fp16"):
        if not isinstance(pc.get(key, False), bool):
            raise ConfigError(f"parent_cache.{key} must be true or false, got {pc[key]!r}")
    store = pc.get("store") or []
    if not isinstance(store, list) or not all(isinstance(g, (str, dict)) for g in store):
        raise ConfigError(f"parent_cache.store must be a list of parent genes (e.g. [avgpool, layer2]), got {store!r}")


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"trainer.max_epochs=3"`` -> (["trainer", "max_epochs"], 3); values are YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value (e.g. trainer.max_epochs=3)")
    key, value = text.split("=", 1)
    return key.strip().lstrip("-").split("."), load_yaml(value)


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursive merge of ``update`` into a copy of ``base``. A ``method`` section replaces the base one whole:
    options of one method (e.g. ``genes``) mean nothing to another."""
    out = copy.deepcopy(base)
    for k, v in update.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "method" else copy.deepcopy(v)
    return out


def from_dict(cfg: dict[str, Any]) -> dict[str, Any]:
    """Defaults <- ``cfg`` (a partial config mapping); validated."""
    return validate(merge(DEFAULTS, cfg))


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    """Defaults <- YAML file <- overrides; validated. ``path`` may also be a run folder (``hkt fit``'s ``out_dir``, or
    a final run of ``hkt compare``, e.g. ``runs/<grid>/runs/hkt/seed0``): the config its ``result.json`` records."""
    cfg = copy.deepcopy(DEFAULTS)
    if path is not None:
        path = Path(path)
        if path.is_dir():
            if not (path / "result.json").is_file():
                raise ConfigError(f"{path} is a folder without result.json: give a YAML config or a finished run's folder")
            path = path / "result.json"
            loaded = (load_yaml(path.read_text()) or {}).get("config")  # JSON is YAML
            if not isinstance(loaded, dict):
                raise ConfigError(f"{path} records no config; give the run's YAML config instead")
            loaded = {**loaded, "out_dir": str(path.parent)}  # wherever the folder lies now
        elif not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        else:
            loaded = load_yaml(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path} must hold a mapping of sections")
        cfg = merge(cfg, loaded)
    for text in overrides or []:
        keys, value = parse_override(text)
        node = cfg
        for k in keys[:-1]:
            if not isinstance(node.get(k), dict):
                raise _unknown(k, set(node) if isinstance(node, dict) else set(), "")
            node = node[k]
        node[keys[-1]] = value
    return validate(cfg)
