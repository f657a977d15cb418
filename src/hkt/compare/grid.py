"""``hkt compare``: methods x seeds on identical data, splits, schedule and starting weights.

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

import json
import time
from pathlib import Path
from typing import Any

from hkt.compare.summary import summarize
from hkt.config import ConfigError, from_dict, load_yaml, merge
from hkt.io import RunLockedError, write_atomic
from hkt.training.run import fit_or_resume

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
        from hkt.compare.search import validate_search

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
        from hkt.compare.search import chosen

        params = chosen(grid).get(name)
        if params is None:
            raise ConfigError(f"method {name!r} has not finished its search ({grid['search']['trials']} trials); run hkt compare to finish it")
    from hkt.compare.search import set_path

    for key, value in (params or {}).items():
        cfg = set_path(cfg, key, value)
    cfg["out_dir"] = str(work / "runs" / name / f"seed{seed}")
    cfg["seed"] = seed
    return from_dict(cfg)


def run_grid(grid: dict[str, Any], only: list[str] | None = None) -> None:
    """Run prepare runs, then every (method, seed) not yet finished; copy records to ``out_dir``."""
    out = Path(grid["out_dir"])
    for name in grid["prepare"]:
        print(f"[hkt compare] prepare {name}", flush=True)
        while True:  # every method starts from the prepare runs: wait for a worker that is training one
            try:
                record = fit_or_resume(run_config(grid, name, None))
                break
            except RunLockedError:
                print(f"[hkt compare] prepare {name}: another worker is training it; waiting", flush=True)
                time.sleep(5)
        _publish(record, out / "prepare" / f"{name}.json")
    busy = []
    searched = None
    if grid.get("search") is not None:
        from hkt.compare.search import tune

        searched = tune(grid, only)
    for name in grid["methods"]:
        if searched is not None and name not in searched and not (only and name not in only):
            print(f"[hkt compare] {name}: its search has trials running in other workers; final seeds wait for them", flush=True)
            busy.append(f"{name} (search)")
    for seed in grid["seeds"]:  # seed-major: every method gets its first seed before any gets a third
        for name in grid["methods"]:
            if only and name not in only or searched is not None and name not in searched:
                continue
            print(f"[hkt compare] {name} seed {seed}", flush=True)
            try:
                record = fit_or_resume(run_config(grid, name, seed))
            except RunLockedError:  # another worker on the same grid has this run: take the next one
                print(f"[hkt compare] {name} seed {seed}: another worker is running it; skipped", flush=True)
                busy.append(f"{name}/seed{seed}")
                continue
            _publish(record, out / "runs" / name / f"seed{seed}.json")
            summarize(grid)  # the summary is always current, even if the grid is stopped
    if busy:
        print(f"[hkt compare] still running in other workers: {', '.join(busy)}; rerun to summarise them when done", flush=True)


def _publish(record: dict[str, Any], path: Path) -> None:
    write_atomic(path, json.dumps(record, indent=1, default=str))

