"""The committed records of a grid, from which every summary rebuilds: final runs (``out_dir/runs/<method>/seed<k>.json``),
prepare runs (``out_dir/prepare/<name>.json``) and tuning trials (``out_dir/search/<method>/trial<n>.json``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hkt.io import read_json, write_atomic
from hkt.methods import METHODS


def load_records(out_dir: str | Path) -> dict[str, dict[int, dict[str, Any]]]:
    """``{method: {seed: record}}`` from ``out_dir/runs/<method>/seed<k>.json``."""
    records: dict[str, dict[int, dict[str, Any]]] = {}
    for path in sorted(Path(out_dir, "runs").glob("*/seed*.json")):
        records.setdefault(path.parent.name, {})[int(path.stem[4:])] = json.loads(path.read_text())
    return records


def trial_records(out_dir: str | Path, method: str) -> list[dict[str, Any]]:
    """The readable trial records of ``method``, by trial number (an unreadable one is logged and left out: redone)."""
    paths = sorted(Path(out_dir, "search", method).glob("trial*.json"), key=lambda p: int(p.stem[5:]))
    return [r for r in map(read_json, paths) if r is not None]


def complete(grid: dict[str, Any]) -> bool:
    """Every method has its ``trials`` committed trial records."""
    return all(len(trial_records(grid["out_dir"], m)) >= grid["search"]["trials"] for m in grid["methods"])


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


def is_committed(cfg: dict[str, Any], path: Path) -> bool:
    """Whether the final run of ``cfg`` has its committed record at ``path``. A fresh checkout has no ``work_dir``,
    so the committed records are what a grid resumes from: a run is never trained twice. A record whose config is
    not ``cfg`` (the grid changed since) is an error, never silently kept or replaced."""
    record = read_json(path)
    if record is None:  # none, or unreadable (named in the log): the run is redone and its record written again
        return False
    old = record.get("config", {})
    if old != cfg:
        differ = sorted(k for k in set(old) | set(cfg) if old.get(k) != cfg.get(k))
        raise RuntimeError(
            f"{path} was run with another config ({', '.join(differ)} differ, e.g. {differ[0]}: committed "
            f"{old.get(differ[0])!r}, now {cfg.get(differ[0])!r}); restore the grid file, or move {path} away to run it again"
        )
    return True


def parent_weights(grid: dict[str, Any]) -> dict[str, list[str]]:
    """``{parent spec as the grid writes it: [weight hashes]}`` over every committed final run and trial record that
    names its parent's weights (``parent_weights``, a hash of every tensor). Raises when one spec (an arch and its
    weights: a path, a name, a ``@prepare`` reference) was read with two different contents in one grid: a prepare run
    retrained to another checkpoint, a weights file replaced under its name. The grid's runs would then compare
    methods under different parents."""
    seen: dict[str, dict[str, list[str]]] = {}
    finals = load_records(grid["out_dir"])
    for method, options in grid["methods"].items():
        common, own = (grid.get("common") or {}).get("parent") or {}, (options or {}).get("parent") or {}
        by_hash = seen.setdefault(json.dumps({**common, **own}, sort_keys=True), {})
        for seed, r in finals.get(method, {}).items():
            if "parent_weights" in r:
                by_hash.setdefault(r["parent_weights"], []).append(f"runs/{method}/seed{seed}")
        for t in trial_records(grid["out_dir"], method) if grid.get("search") else []:
            for h in t.get("parent_weights", []):
                by_hash.setdefault(h, []).append(f"search/{method}/trial{t['trial']}")
    for spec, by_hash in seen.items():
        if len(by_hash) > 1:
            which = "; ".join(f"{h[:12]}: {', '.join(where[:3])}{' ...' if len(where) > 3 else ''}" for h, where in by_hash.items())
            raise RuntimeError(
                f"{grid['out_dir']}: parent {spec} was read with {len(by_hash)} different weights ({which}); "
                "the runs of one grid must share their parent: rerun the minority, or split the grid"
            )
    return {spec: sorted(by_hash) for spec, by_hash in seen.items() if by_hash}


def unhashed(grid: dict[str, Any]) -> list[str]:
    """The committed records that read a parent but do not name its weights (``parent_weights``): records written
    before runs recorded it. Which parent they read then rests on the grid's spec and shared cache, not on content."""

    def reads_parent(cfg: dict[str, Any]) -> bool:
        return bool((cfg.get("parent") or {}).get("arch")) and METHODS[cfg["method"]["name"]].needs_parent

    missing = [
        f"runs/{m}/seed{k}"
        for m, by_seed in load_records(grid["out_dir"]).items()
        for k, r in sorted(by_seed.items())
        if "parent_weights" not in r and reads_parent(r.get("config", {}))
    ]
    common = grid.get("common") or {}
    for method, options in grid["methods"].items() if grid.get("search") else ():
        own = options or {}
        if reads_parent({"parent": {**(common.get("parent") or {}), **(own.get("parent") or {})}, "method": own["method"]}):
            missing += [f"search/{method}/trial{t['trial']}" for t in trial_records(grid["out_dir"], method) if not t.get("parent_weights")]
    return missing


def publish(record: dict[str, Any], path: Path) -> None:
    write_atomic(path, json.dumps(record, indent=1, default=str))


def publish_trial(
    grid: dict[str, Any],
    method: str,
    number: int,
    params: dict[str, Any],
    values: dict[int, float],
    mean: float,
    wall: float,
    parents: list[str] = (),
) -> None:
    record = {
        "method": method,
        "trial": number,
        "params": params,
        "val_by_seed": {str(k): v for k, v in values.items()},
        "val_mean": mean,
        "fit_wall_s": wall,
        "sampler": grid["search"].get("sampler", "sobol"),
        **({"parent_weights": parents} if parents else {}),
    }
    write_atomic(Path(grid["out_dir"]) / "search" / method / f"trial{number}.json", json.dumps(record, indent=1))


def check_reproduced(record: dict[str, Any], committed: Path) -> None:
    """A prepare run retrained in a fresh work_dir (its checkpoint is not committed) must reproduce its committed
    record: the final runs already committed started from that checkpoint, and new ones must start from the same."""
    if not committed.is_file():
        return
    old = json.loads(committed.read_text())
    keys = [k for k in old if k.endswith("_best") or k.startswith("test_")] + ["epochs"]

    def strip(epochs: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
        return [{k: v for k, v in e.items() if not k.endswith("_s")} for e in epochs or []]  # times vary

    differ = [
        k
        for k in keys
        if (strip(old.get(k)) if k == "epochs" else old.get(k)) != (strip(record.get(k)) if k == "epochs" else record.get(k))
    ]
    if differ:
        raise RuntimeError(
            f"prepare run {committed.stem} did not reproduce its committed record {committed} ({', '.join(differ[:4])} differ, e.g. "
            f"{differ[0]}: committed {old.get(differ[0])!r}, now {record.get(differ[0])!r}); the committed final runs started "
            "from the other checkpoint. Restore the original checkpoint into work_dir, or start the grid in a new out_dir"
        )
