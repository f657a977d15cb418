"""A grid file and the run configs it implies: ``hkt compare`` trains methods x seeds on identical data, splits,
schedule and starting weights.

A grid file (YAML)::

    name: fashion_mnist                 # results go to out_dir; checkpoints to work_dir (not committed)
    out_dir: benchmarks/results/fashion_mnist
    work_dir: runs/compare/fashion_mnist
    seeds: [0, 1, 2]
    metric: {test: test_acc, val: val/acc, higher_is_better: true}
    common: {data: ..., child: {arch: resnet8, weights: "@base"}, parent: {arch: resnet20, weights: "@parent"}, ...}
    prepare:                            # trained once, in order, before any method; "@name" = its best checkpoint
      parent: {child: {arch: resnet20, weights: null}, parent: {arch: null}, method: {name: ce}}
      base: {...}
    methods:
      ce: {method: {name: ce}, parent: {arch: null, weights: null}}
      kd: {method: {name: kd}}
    pairs: [[hkt_lr003, ce_lr003]]      # optional extra paired comparisons for the summary

Every (method, seed) run is resumable at epoch granularity and skipped once finished, so a grid can be
stopped and continued. Each finished run's record is copied to ``out_dir/runs/<method>/seed<k>.json``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from hkt.compare.records import chosen, complete
from hkt.compare.sampler import SAMPLERS
from hkt.compare.space import SEARCH_KEYS, distribution, spaces
from hkt.config import ConfigError, from_dict, load_yaml, merge

GRID_KEYS = {"name", "out_dir", "work_dir", "seeds", "metric", "common", "prepare", "methods", "notes", "pairs", "search"}
SEARCH_ONLY = ("space", "trials")  # method keys that belong to the search, not to the run config


def load_grid(path: str | Path) -> dict[str, Any]:
    """Read and validate a grid file: every run config it implies is validated before anything trains."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"grid file {path} does not exist")
    grid = load_yaml(path.read_text()) or {}
    unknown = set(grid) - GRID_KEYS
    if unknown:
        raise ConfigError(f"unknown grid key(s) {sorted(unknown)} in {path}; valid: {sorted(GRID_KEYS)}")
    for key in ("out_dir", "work_dir", "methods"):
        if key not in grid:
            raise ConfigError(f"grid {path} needs '{key}'")
    grid.setdefault("seeds", [0, 1, 2])
    grid.setdefault("prepare", {})
    grid.setdefault("common", {})
    grid["metric"] = {"test": "test_acc", "val": "val/acc", "higher_is_better": True, **(grid.get("metric") or {})}
    for name in grid["prepare"]:
        run_config(grid, name, None, check_refs=False)
    if grid.get("search") is not None:
        validate_search(grid)
    for name in grid["methods"]:
        for seed in grid["seeds"]:
            run_config(grid, name, seed, check_refs=False, params={})
    return grid


def _resolve_refs(node: Any, grid: dict[str, Any], check: bool) -> Any:
    """Replace ``"@name"`` by the best checkpoint of prepare run ``name``."""
    if isinstance(node, dict):
        return {k: _resolve_refs(v, grid, check) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve_refs(v, grid, check) for v in node]
    if isinstance(node, str) and node.startswith("@"):
        ref = node[1:]
        if ref not in grid["prepare"]:
            raise ConfigError(f"'{node}' refers to no prepare run; prepare runs: {sorted(grid['prepare'])}")
        ckpt = Path(grid["work_dir"]) / "prepare" / ref / "checkpoints" / "best.ckpt"
        if check and not ckpt.is_file():
            raise FileNotFoundError(f"{ckpt} is missing: prepare run '{ref}' has not finished")
        return str(ckpt)
    return node


def base_config(grid: dict[str, Any], name: str, check_refs: bool = True) -> dict[str, Any]:
    """Method ``name``'s config before seed, out_dir and searched settings (unvalidated)."""
    spec = {k: v for k, v in (grid["methods"][name] or {}).items() if k not in SEARCH_ONLY}
    return _resolve_refs(merge(grid["common"], spec), grid, check_refs)  # merge replaces `method` whole


def run_config(
    grid: dict[str, Any], name: str, seed: int | None, check_refs: bool = True, params: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The validated run config of prepare run ``name`` (``seed=None``) or of method ``name`` at final ``seed``,
    with the settings its search chose (``params``; read from the committed trial records when ``None``)."""
    work = Path(grid["work_dir"])
    if seed is None:
        cfg = _resolve_refs(merge(grid["common"], grid["prepare"][name] or {}), grid, check_refs)
        cfg["out_dir"] = str(work / "prepare" / name)
        return from_dict(cfg)
    cfg = base_config(grid, name, check_refs)
    if params is None and grid.get("search") is not None:
        params = chosen(grid).get(name)
        if params is None:
            raise ConfigError(
                f"method {name!r} has not finished its search ({grid['search']['trials']} trials); run hkt compare to finish it"
            )
    for key, value in (params or {}).items():
        cfg = set_path(cfg, key, value)
    cfg["out_dir"] = str(work / "runs" / name / f"seed{seed}")
    cfg["seed"] = seed
    return from_dict(cfg)


def set_path(cfg: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """``cfg`` with dotted ``key`` set to ``value`` (a copy)."""
    *parents, leaf = key.split(".")
    update: dict[str, Any] = {leaf: value}
    for p in reversed(parents):
        update = {p: update}
    if parents and parents[0] == "method":  # merge() replaces `method` whole; keep its other options
        update = {"method": {**cfg.get("method", {}), **update["method"]}}
    return merge(cfg, update)


def validate_search(grid: dict[str, Any]) -> None:
    """Every bad search input fails here, before any training, naming the key and the valid choices."""
    search = grid["search"]
    unknown = set(search) - SEARCH_KEYS
    if unknown:
        raise ConfigError(f"unknown search key(s) {sorted(unknown)}; valid: {sorted(SEARCH_KEYS)}")
    trials = search.get("trials")
    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
        raise ConfigError(f"search.trials must be a positive int (the same budget for every method), got {trials!r}")
    sampler = search.get("sampler", "sobol")
    if sampler not in SAMPLERS or sampler == "tpe" and not complete(grid):
        raise ConfigError(
            f"search.sampler must be sobol or grid, got {sampler!r}"
            + (
                " (tpe replays its seeded draws when a search resumes; it is kept only to rebuild evidence v2's finished searches)"
                if sampler == "tpe"
                else ""
            )
        )
    tuning = search.get("tuning_seeds")
    if not isinstance(tuning, list) or not tuning or not all(isinstance(s, int) for s in tuning):
        raise ConfigError(f"search.tuning_seeds must be a non-empty list of ints, got {tuning!r}")
    overlap = sorted(set(tuning) & set(grid["seeds"]))
    if overlap:
        raise ConfigError(f"search.tuning_seeds and seeds overlap on {overlap}: tune on seeds the final runs do not use")
    for method, spec in grid["methods"].items():
        own = (spec or {}).get("trials", trials)
        if own != trials:
            raise ConfigError(f"methods.{method}.trials = {own} but search.trials = {trials}: every method gets the same trial budget")
    for method, space in spaces(grid).items():
        if not space:
            raise ConfigError(
                f"search space of method {method!r} is empty; give search.space (at least optim.lr) or methods.{method}.space"
            )
        if "optim.lr" not in space:
            raise ConfigError(f"search space of method {method!r} lacks optim.lr: every method's learning rate is tuned")
        dists = {k: distribution(method, k, v) for k, v in space.items()}
        probe = {k: d.choices[0] if hasattr(d, "choices") else d.low for k, d in dists.items()}
        try:
            trial_config(grid, method, tuning[0], probe, check_refs=False)
        except ConfigError as e:
            raise ConfigError(f"search space of method {method!r}: {e}") from None
        if sampler == "grid":
            points = math.prod(len(d.choices) if hasattr(d, "choices") else math.inf for d in dists.values())
            if points != trials:
                raise ConfigError(
                    f"search.sampler grid: method {method!r} has {points} grid points but search.trials = {trials}; "
                    "give every parameter `choices` so that each method's grid has exactly `trials` points"
                )


def trial_config(
    grid: dict[str, Any], method: str, seed: int, params: dict[str, Any], check_refs: bool = True, trial: int | None = None
) -> dict[str, Any]:
    """The validated config of tuning trial ``trial`` of ``method`` at tuning ``seed`` with settings ``params``."""
    cfg = base_config(grid, method, check_refs)
    for key, value in params.items():
        cfg = set_path(cfg, key, value)
    cfg["seed"] = seed
    cfg["out_dir"] = str(Path(grid["work_dir"]) / "tune" / method / f"trial{trial}" / f"seed{seed}")
    return from_dict(cfg)
