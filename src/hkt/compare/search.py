"""Equal-budget hyperparameter search for ``hkt compare``, on Optuna.

A comparison measures methods, not step sizes: every method gets **the same number of trials** over its own
space (always the learning rate, plus the method's own weights), on **tuning seeds** disjoint from the final
seeds, and is selected on the **mean validation metric** over the tuning seeds. Tuning runs never evaluate the
test split. The final seeds then run with each method's chosen settings.

Grid keys::

    search:
      trials: 6                  # per method, the same for all: trial numbers 0 .. trials-1, exactly
      sampler: sobol             # sobol | grid (grid: every method's grid must have exactly `trials` points)
      tuning_seeds: [100]
      seed: 0                    # seeds the sampler (with the method's name)
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
processes (or machines, with a shared RDB URL) can work on one search:

- trial ``n``'s candidate depends only on (``search.seed``, method, ``n``) (:mod:`hkt.compare.sampler`), so
  resumes and workers never replay a candidate;
- the budget is the trial *numbers* ``0 .. trials-1``, which the storage hands out one by one (Optuna locks the
  study row to number a trial): a worker that is handed a higher number marks it failed and stops, so N workers
  never finish more than ``trials`` trials;
- runs are locked, and a trial left running is resumed only on the machine that started it (its lock lives there).

A study that starts empty (a fresh checkout) is first filled from the committed trial records in
``out_dir/search``, so finished trials are never rerun. A study remembers its sampler, seed and space: a grid
whose space changed since fails, naming the parameter.
"""

from __future__ import annotations

import contextlib
import fcntl
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

from hkt.compare.records import chosen, publish_trial, trial_records
from hkt.compare.sampler import candidate, method_seed, refusing_sampler, trial_indexed_sobol
from hkt.compare.space import distribution, spaces
from hkt.compare.spec import trial_config
from hkt.config import ConfigError
from hkt.io import RunLock, RunLockedError, kill_point
from hkt.training.run import fit_or_resume


def storage_url(grid: dict[str, Any]) -> str:
    """The study's SQLAlchemy URL; ``postgresql://`` means the psycopg 3 driver (``pip install hkt[postgres]``)."""
    url = grid["search"].get("storage")
    if url:
        url = str(url)
        return "postgresql+psycopg://" + url[len("postgresql://") :] if url.startswith("postgresql://") else url
    Path(grid["work_dir"]).mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{Path(grid['work_dir']).resolve() / 'search.db'}"


def _safe(url: str) -> str:
    """``url`` with its password masked, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not even a URL: nothing in it can be trusted to be printable
        return "the search.storage URL"


@contextlib.contextmanager
def _schema_lock(url: str) -> Iterator[None]:
    """Workers on one SQLite file take turns to open it: Optuna creates the schema of a new file without a lock."""
    if not url.startswith("sqlite:///") or url == "sqlite:///:memory:":
        yield
        return
    path = Path(url[len("sqlite:///") :])
    if not path.parent.is_dir():
        yield  # Optuna names the missing folder
        return
    with open(f"{path}.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _storage(url: str) -> Any:
    for attempt in range(5):
        try:
            with _schema_lock(url):
                return optuna.storages.RDBStorage(url, heartbeat_interval=None)
        except ModuleNotFoundError as e:
            raise ConfigError(f"the search storage {_safe(url)} needs the driver {e.name!r}: pip install 'hkt[postgres]'") from None
        except Exception as e:  # bad URL, server down, wrong password, unwritable file: the driver's first line names the host
            cause = e.orig if getattr(e, "orig", None) is not None else e.__cause__ or e
            reason = " ".join(str(cause).split()) or type(cause).__name__
            if attempt < 4 and any(
                race in reason for race in ("already exists", "database is locked", "UNIQUE constraint", "duplicate key")
            ):
                time.sleep(0.5 + attempt)  # two workers creating the schema of a new database at once: one wins
                continue
            raise ConfigError(f"cannot open the search storage {_safe(url)}: {reason}") from None


def open_study(grid: dict[str, Any], method: str) -> Any:
    """``(study, distributions)`` of ``method``'s search; fails if the study was made for another sampler or space."""
    search = grid["search"]
    kind = search.get("sampler", "sobol")
    seed = method_seed(search.get("seed", 0), method)
    dists = {k: distribution(method, k, v) for k, v in spaces(grid)[method].items()}
    if kind == "grid":
        sampler: Any = optuna.samplers.GridSampler({k: list(d.choices) for k, d in dists.items()}, seed=seed)
        # its study.stop() once every point has run is an error outside study.optimize (we ask and tell): the trial
        # budget ends the search instead
        sampler.after_trial = lambda *args: None
    elif kind == "sobol":
        sampler = trial_indexed_sobol(dists, seed)
    else:
        sampler = refusing_sampler(f"method {method!r}: sampler tpe only rebuilds finished searches; use sampler: sobol")
    direction = "maximize" if grid["metric"]["higher_is_better"] else "minimize"
    name = f"{grid.get('name', 'grid')}::{method}"
    study = optuna.create_study(
        storage=_storage(storage_url(grid)), sampler=sampler, study_name=name, direction=direction, load_if_exists=True
    )
    made_for = {"sampler": kind, "seed": seed, "space": {k: repr(d) for k, d in sorted(dists.items())}}
    before = study.user_attrs.get("made_for")
    if before is None:
        study.set_user_attr("made_for", made_for)
    elif before != made_for:
        changed = sorted(set(before["space"]) ^ set(made_for["space"])) + sorted(
            k for k in set(before["space"]) & set(made_for["space"]) if before["space"][k] != made_for["space"][k]
        )
        what = f"parameter(s) {changed}" if changed else f"sampler {before['sampler']} (seed {before['seed']})"
        raise ConfigError(
            f"the study {name!r} in {_safe(storage_url(grid))} was made for another search: {what} changed since; "
            f"restore the grid's search, or delete the study (optuna delete-study --study-name {name!r}) to search again"
        )
    return study, dists


def _objective(grid: dict[str, Any], method: str, number: int, params: dict[str, Any]) -> tuple[float, dict[int, float], float, list[str]]:
    """Mean validation metric of ``params`` over the tuning seeds, the values per seed, the summed training
    wall time (s) and the parents' weight hashes; the test split is never evaluated."""
    val_key = f"{grid['metric']['val'].replace('/', '_')}_best"
    values, wall, parents = {}, 0.0, []
    for seed in grid["search"]["tuning_seeds"]:
        record = fit_or_resume(trial_config(grid, method, seed, params, trial=number), evaluate_test=False)
        values[seed] = float(record[val_key])
        wall += float(record["fit_wall_s"])
        parents += [record["parent_weights"]] if "parent_weights" in record else []
    return sum(values.values()) / len(values), values, wall, sorted(set(parents))


def _run_trial(grid: dict[str, Any], method: str, study: Any, number: int, params: dict[str, Any]) -> None:
    """Train and record one trial, holding its folder's lock throughout (its runs are locked one at a time):
    ``RunLockedError`` when another worker on this machine has it."""
    with RunLock(Path(grid["work_dir"]) / "tune" / method / f"trial{number}"):
        mean, values, wall, parents = _objective(grid, method, number, params)
        kill_point("search:trained")
        study.tell(number, mean, skip_if_finished=True)
        kill_point("search:told")
        publish_trial(grid, method, number, params, values, mean, wall, parents)


def _params(grid: dict[str, Any], method: str, dists: dict[str, Any], trial: Any) -> dict[str, Any]:
    """The parameters trial ``trial`` must train with. Under ``sobol`` they are recomputed from its number, so a trial
    whose parameters never reached the storage (its worker was killed inside ``ask``) still trains its own candidate.
    Under ``grid`` a trial without every parameter cannot be trusted: it fails the search, naming it."""
    search = grid["search"]
    if search.get("sampler", "sobol") == "sobol":
        drawn = candidate(dists, method_seed(search.get("seed", 0), method), trial.number)
        return {k: drawn[k] for k in dists}  # the grid's order, as Optuna reports a trial's parameters
    if set(trial.params) != set(dists):
        raise ConfigError(
            f"method {method!r}: trial {trial.number} lacks parameter(s) {sorted(set(dists) - set(trial.params))} in the study "
            f"(its worker stopped while asking for it); delete the study {grid.get('name', 'grid')}::{method} to search again"
        )
    return dict(trial.params)


def tune(grid: dict[str, Any], only: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Run (or resume) each method's search to ``search.trials`` finished trials; return ``{method: chosen params}``
    for the methods whose search is complete. Records of every trial go to ``out_dir/search/<method>/``.

    A trial left behind by a killed worker on this machine is finished here, whatever the point of the kill: running
    (resumed with its number's parameters), or told but not yet recorded (its record is rebuilt from its runs'
    results, which are read, not retrained)."""
    trials, host = grid["search"]["trials"], socket.gethostname()
    for method in grid["methods"]:
        if only and method not in only:
            continue
        study, dists = open_study(grid, method)
        _restore(study, dists, grid, method, host)
        budget = [t for t in study.get_trials(deepcopy=False) if t.number < trials]
        ended = {t.number: t.state.name.lower() for t in budget if t.state not in (TrialState.COMPLETE, TrialState.RUNNING)}
        if ended:  # a number of the budget that can never finish: the budget could not be filled
            raise ConfigError(
                f"method {method!r}: trial(s) of the budget ended without a value in the study ({ended}); "
                f"delete the study {study.study_name!r} to search again"
            )
        recorded = {r["trial"] for r in trial_records(grid["out_dir"], method)}
        for left in budget:  # left running, or told but unrecorded, by a crash: finished on the machine that holds its runs
            if left.state == TrialState.COMPLETE and left.number in recorded:
                continue
            if left.user_attrs.get("host", host) != host:
                owner = left.user_attrs["host"]
                print(f"[hkt compare] tune {method}: trial {left.number} belongs to host {owner}; it resumes there", flush=True)
                continue
            params = _params(grid, method, dists, left)
            print(f"[hkt compare] tune {method}: resuming trial {left.number} {params}", flush=True)
            try:
                _run_trial(grid, method, study, left.number, params)
            except RunLockedError:
                continue  # another worker on this machine is on it
        while len(study.get_trials(deepcopy=False)) < trials:
            kill_point("search:ask")
            trial = study.ask(dists)
            if trial.number >= trials:  # another worker took the last number between our count and our ask
                study.tell(trial, state=TrialState.FAIL)
                break
            trial.set_user_attr("host", host)
            params = _params(grid, method, dists, trial)
            print(f"[hkt compare] tune {method}: trial {trial.number} {params}", flush=True)
            try:
                _run_trial(grid, method, study, trial.number, params)
            except RunLockedError:
                continue  # a restarted worker on this machine took it up first
    return chosen(grid)


def _restore(study: Any, dists: dict[str, Any], grid: dict[str, Any], method: str, host: str) -> None:
    """A new study (another machine, a fresh checkout: the database lives in the uncommitted work_dir) starts from
    the committed trial records, so finished trials are never rerun and trial numbers stay the same. Under the
    sobol sampler each record must be the candidate of its number: anything else means the space or seed changed.
    A number whose record is missing or unreadable (a full disk) is restored as running, to be redone here."""
    if study.trials:
        return
    search = grid["search"]
    records = {r["trial"]: r for r in trial_records(grid["out_dir"], method)}
    for number in range(max(records, default=-1) + 1):
        record = records.get(number)
        if record is None:
            if search.get("sampler", "sobol") != "sobol":
                raise ConfigError(f"committed trials of {method!r} skip number {number}: {Path(grid['out_dir']) / 'search' / method}")
            params = candidate(dists, method_seed(search.get("seed", 0), method), number)
            redo = optuna.trial.create_trial(params=params, distributions=dists, state=TrialState.RUNNING, user_attrs={"host": host})
            study.add_trial(redo)
            continue
        if search.get("sampler", "sobol") == "sobol" and record.get("sampler") == "sobol":
            expected = candidate(dists, method_seed(search.get("seed", 0), method), number)
            changed = sorted(k for k in set(expected) | set(record["params"]) if expected.get(k) != record["params"].get(k))
            if changed:
                raise ConfigError(
                    f"committed trial {number} of {method!r} is not the sobol candidate of the grid's search now: parameter(s) "
                    f"{changed} (space or search.seed changed); restore them, or move {Path(grid['out_dir']) / 'search' / method} "
                    "away to search again"
                )
        try:
            study.add_trial(optuna.trial.create_trial(params=record["params"], distributions=dists, value=record["val_mean"]))
        except ValueError as e:
            raise ConfigError(
                f"committed trial {record['trial']} of {method!r} ({record['params']}) does not fit the search space now in the grid "
                f"({e}); restore the space, or move {Path(grid['out_dir']) / 'search' / method} away to search again"
            ) from None
