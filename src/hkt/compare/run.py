"""``hkt compare``'s driver: prepare runs, the search, then every (method, seed) not yet finished (no committed record
in ``out_dir``), records copied to ``out_dir`` as they finish and the summary rebuilt after each."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from hkt.compare.records import check_reproduced, is_committed, publish
from hkt.compare.search import tune
from hkt.compare.spec import run_config
from hkt.compare.summary import summarize
from hkt.io import RunLockedError
from hkt.training.run import fit_or_resume


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
        check_reproduced(record, out / "prepare" / f"{name}.json")
        publish(record, out / "prepare" / f"{name}.json")
    busy, published = [], False
    searched = None
    if grid.get("search") is not None:
        searched = tune(grid, only)
    for name in grid["methods"]:
        if searched is not None and name not in searched and not (only and name not in only):
            print(f"[hkt compare] {name}: its search has trials running in other workers; final seeds wait for them", flush=True)
            busy.append(f"{name} (search)")
    for seed in grid["seeds"]:  # seed-major: every method gets its first seed before any gets a third
        for name in grid["methods"]:
            if only and name not in only or searched is not None and name not in searched:
                continue
            cfg, path = run_config(grid, name, seed), out / "runs" / name / f"seed{seed}.json"
            if is_committed(cfg, path):
                continue
            print(f"[hkt compare] {name} seed {seed}", flush=True)
            try:
                record = fit_or_resume(cfg)
            except RunLockedError:  # another worker on the same grid has this run: take the next one
                print(f"[hkt compare] {name} seed {seed}: another worker is running it; skipped", flush=True)
                busy.append(f"{name}/seed{seed}")
                continue
            publish(record, path)
            summarize(grid)  # the summary is always current, even if the grid is stopped
            published = True
    if not published and any((out / "runs").glob("*/seed*.json")):
        summarize(grid)  # every run was committed already (a fresh checkout, or another worker's)
    if busy:
        print(f"[hkt compare] still running in other workers: {', '.join(busy)}; rerun to summarise them when done", flush=True)
