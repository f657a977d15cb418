"""Equal-budget hyperparameter search for ``hkt compare``, on Optuna.

A comparison measures methods, not step sizes: every method gets **the same number of trials** over its own
space (always the learning rate, plus the method's own weights), on **tuning seeds** disjoint from the final
seeds, and is selected on the **mean validation metric** over the tuning seeds. Tuning runs never evaluate the
test split. The final seeds then run with each method's chosen settings.

Grid keys::

    search:
      trials: 6                  # per method, the same for all
      sampler: tpe               # tpe | grid (grid: every method's grid must have exactly `trials` points)
      tuning_seeds: [100]
      seed: 0                    # seeds the sampler
      storage: null              # default: sqlite:///<work_dir>/search.db; any SQLAlchemy URL (e.g. PostgreSQL)
      space:                     # for every method
        optim.lr: {low: 0.001, high: 0.1, log: true}
    methods:
      kd:
        method: {name: kd}
        space: {method.kd_weight: {low: 0.1, high: 10, log: true}}

A parameter is a dotted config path; its spec is ``{low, high[, log][, int]}`` or ``{choices: [...]}``. The
study lives in the storage (one per method), so a search resumes after a crash: a trial left running by a
dead process is resumed with its own parameters, and each of its runs resumes from its last epoch. Several
processes (or machines, with a shared RDB URL) can work on one search: runs are locked, and a trial that
another worker holds is left to it. A study that starts empty (a fresh checkout) is first filled from the committed
trial records in ``out_dir/search``, so finished trials are never rerun.
"""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path
from typing import Any

from hkt.config import ConfigError, from_dict, merge
from hkt.io import RunLockedError, write_atomic

SAMPLERS = ("tpe", "grid")
SEARCH_KEYS = {"trials", "sampler", "tuning_seeds", "seed", "storage", "space"}


def _spec_error(method: str, key: str, spec: Any) -> ConfigError:
    return ConfigError(
        f"search space of method {method!r}: {key}: {spec!r} must be {{low: L, high: H}} (optionally log: true, int: true) "
        "or {choices: [...]}"
    )


def distribution(method: str, key: str, spec: Any) -> Any:
    """Optuna distribution of one parameter spec."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if not isinstance(spec, dict):
        raise _spec_error(method, key, spec)
    if "choices" in spec:
        if set(spec) != {"choices"} or not isinstance(spec["choices"], list) or not spec["choices"]:
            raise _spec_error(method, key, spec)
        return CategoricalDistribution(spec["choices"])
    if not {"low", "high"} <= set(spec) <= {"low", "high", "log", "int"}:
        raise _spec_error(method, key, spec)
    low, high, log = spec["low"], spec["high"], bool(spec.get("log", False))
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) or low >= high or (log and low <= 0):
        raise ConfigError(f"search space of method {method!r}: {key} needs numbers low < high (and low > 0 with log), got {spec!r}")
    return IntDistribution(int(low), int(high), log=log) if spec.get("int") else FloatDistribution(float(low), float(high), log=log)


def spaces(grid: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{method: {dotted key: spec}}``: the shared space merged with each method's own."""
    shared = grid["search"].get("space") or {}
    return {m: {**shared, **((spec or {}).get("space") or {})} for m, spec in grid["methods"].items()}


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
    if search.get("sampler", "tpe") not in SAMPLERS:
        raise ConfigError(f"search.sampler must be one of {', '.join(SAMPLERS)}, got {search.get('sampler')!r}")
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
            raise ConfigError(f"search space of method {method!r} is empty; give search.space (at least optim.lr) or methods.{method}.space")
        if "optim.lr" not in space:
            raise ConfigError(f"search space of method {method!r} lacks optim.lr: every method's learning rate is tuned")
        dists = {k: distribution(method, k, v) for k, v in space.items()}
        probe = {k: d.choices[0] if hasattr(d, "choices") else d.low for k, d in dists.items()}
        try:
            _config(grid, method, tuning[0], probe, check_refs=False)
        except ConfigError as e:
            raise ConfigError(f"search space of method {method!r}: {e}") from None
        if search.get("sampler", "tpe") == "grid":
            points = math.prod(len(d.choices) if hasattr(d, "choices") else math.inf for d in dists.values())
            if points != trials:
                raise ConfigError(
                    f"search.sampler grid: method {method!r} has {points} grid points but search.trials = {trials}; "
                    "give every parameter `choices` so that each method's grid has exactly `trials` points"
                )


def _config(grid: dict[str, Any], method: str, seed: int, params: dict[str, Any], check_refs: bool = True, trial: int | None = None) -> dict[str, Any]:
    from hkt.compare.grid import base_config

    cfg = base_config(grid, method, check_refs)
    for key, value in params.items():
        cfg = set_path(cfg, key, value)
    cfg["seed"] = seed
    cfg["out_dir"] = str(Path(grid["work_dir"]) / "tune" / method / f"trial{trial}" / f"seed{seed}")
    return from_dict(cfg)


def storage_url(grid: dict[str, Any]) -> str:
    url = grid["search"].get("storage")
    if url:
        return str(url)
    Path(grid["work_dir"]).mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{Path(grid['work_dir']).resolve() / 'search.db'}"


def open_study(grid: dict[str, Any], method: str) -> Any:
    import optuna

    url = storage_url(grid)
    try:
        storage = optuna.storages.RDBStorage(url, heartbeat_interval=None)
    except Exception as e:  # bad URL, server down, missing driver, unwritable file
        raise ConfigError(f"cannot open the search storage {url}: {str(e).splitlines()[0]}") from None
    search = grid["search"]
    seed = int(search.get("seed", 0)) + zlib.crc32(method.encode())  # per method, stable across processes
    dists = {k: distribution(method, k, v) for k, v in spaces(grid)[method].items()}
    if search.get("sampler", "tpe") == "grid":
        sampler: Any = optuna.samplers.GridSampler({k: list(d.choices) for k, d in dists.items()}, seed=seed)
        # its study.stop() once every point has run is an error outside study.optimize (we ask and tell): the trial
        # budget ends the search instead
        sampler.after_trial = lambda *args: None
    else:
        sampler = optuna.samplers.TPESampler(seed=seed)
    direction = "maximize" if grid["metric"]["higher_is_better"] else "minimize"
    name = f"{grid.get('name', 'grid')}::{method}"
    return optuna.create_study(storage=storage, sampler=sampler, study_name=name, direction=direction, load_if_exists=True), dists


def _objective(grid: dict[str, Any], method: str, number: int, params: dict[str, Any]) -> tuple[float, dict[int, float], float]:
    """Mean validation metric of ``params`` over the tuning seeds, the values per seed and the summed training
    wall time (s); the test split is never evaluated."""
    from hkt.training.run import fit_or_resume

    val_key = f"{grid['metric']['val'].replace('/', '_')}_best"
    values, wall = {}, 0.0
    for seed in grid["search"]["tuning_seeds"]:
        record = fit_or_resume(_config(grid, method, seed, params, trial=number), evaluate_test=False)
        values[seed] = float(record[val_key])
        wall += float(record["fit_wall_s"])
    return sum(values.values()) / len(values), values, wall


def _publish_trial(grid: dict[str, Any], method: str, number: int, params: dict[str, Any], values: dict[int, float], mean: float,
                   wall: float) -> None:
    record = {"method": method, "trial": number, "params": params, "val_by_seed": {str(k): v for k, v in values.items()},
              "val_mean": mean, "fit_wall_s": wall}
    write_atomic(Path(grid["out_dir"]) / "search" / method / f"trial{number}.json", json.dumps(record, indent=1))


def tune(grid: dict[str, Any], only: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Run (or resume) each method's search to ``search.trials`` finished trials; return ``{method: chosen params}``
    for the methods whose search is complete. Records of every trial go to ``out_dir/search/<method>/``."""
    from optuna.trial import TrialState

    trials = grid["search"]["trials"]
    for method in grid["methods"]:
        if only and method not in only:
            continue
        study, dists = open_study(grid, method)
        _restore(study, dists, grid, method)
        for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):  # left by a crash, or a worker
            print(f"[hkt compare] tune {method}: resuming trial {frozen.number} {frozen.params}", flush=True)
            try:
                mean, values, wall = _objective(grid, method, frozen.number, frozen.params)
            except RunLockedError:
                continue  # another worker is on it
            study.tell(frozen.number, mean, skip_if_finished=True)
            _publish_trial(grid, method, frozen.number, frozen.params, values, mean, wall)
        while len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))) < trials:
            trial = study.ask(dists)
            print(f"[hkt compare] tune {method}: trial {trial.number} {trial.params}", flush=True)
            mean, values, wall = _objective(grid, method, trial.number, trial.params)
            study.tell(trial, mean)
            _publish_trial(grid, method, trial.number, trial.params, values, mean, wall)
    return chosen(grid)


def _restore(study: Any, dists: dict[str, Any], grid: dict[str, Any], method: str) -> None:
    """A new study (another machine, a fresh checkout: the database lives in the uncommitted work_dir) starts from
    the committed trial records, so finished trials are never rerun and trial numbers stay the same."""
    import optuna

    if study.trials:
        return
    for record in trial_records(grid["out_dir"], method):
        try:
            study.add_trial(optuna.trial.create_trial(params=record["params"], distributions=dists, value=record["val_mean"]))
        except ValueError as e:
            raise ConfigError(
                f"committed trial {record['trial']} of {method!r} ({record['params']}) does not fit the search space now in the grid "
                f"({e}); restore the space, or move {Path(grid['out_dir']) / 'search' / method} away to search again"
            ) from None


def chosen(grid: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{method: params}`` of the best trial of each method whose search has ``trials`` finished trials, read
    from the committed trial records (so a summary rebuilds without the study)."""
    out: dict[str, dict[str, Any]] = {}
    sign = 1 if grid["metric"]["higher_is_better"] else -1
    for method in grid["methods"]:
        records = trial_records(grid["out_dir"], method)
        if len(records) >= grid["search"]["trials"]:
            best = max(records, key=lambda r: (sign * r["val_mean"], -r["trial"]))
            out[method] = best["params"]
    return out


def trial_records(out_dir: str | Path, method: str) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(Path(out_dir, "search", method).glob("trial*.json"), key=lambda p: int(p.stem[5:]))]
