"""One-off: add ``fit_wall_s`` to committed trial records written before trials kept their wall time.

    python benchmarks/backfill_trial_wall.py configs/evidence_v2_fashion_b1.yaml configs/evidence_v2_fashion_b2.yaml

The value is the measured one: the sum over the tuning seeds of ``fit_wall_s`` in the tuning runs' own
``result.json`` under the grid's work_dir (the machine that ran the search has them; a fresh checkout does not,
and then nothing is changed). Records that already hold a wall time are left as they are.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hkt.compare.grid import load_grid
from hkt.io import write_atomic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="+", type=Path)
    args = parser.parse_args()
    for config in args.configs:
        grid = load_grid(config)
        filled = missing = 0
        for path in sorted(Path(grid["out_dir"], "search").glob("*/trial*.json")):
            record = json.loads(path.read_text())
            if "fit_wall_s" in record:
                continue
            results = [Path(grid["work_dir"], "tune", record["method"], f"trial{record['trial']}", f"seed{s}", "result.json")
                       for s in record["val_by_seed"]]
            if not all(r.is_file() for r in results):
                missing += 1
                continue
            runs = [json.loads(r.read_text()) for r in results]
            val_key = f"{grid['metric']['val'].replace('/', '_')}_best"
            if [run[val_key] for run in runs] != list(record["val_by_seed"].values()):
                raise SystemExit(f"{path}: its tuning runs in {grid['work_dir']} do not hold its validation values; not the same runs")
            record["fit_wall_s"] = sum(run["fit_wall_s"] for run in runs)
            write_atomic(path, json.dumps(record, indent=1))
            filled += 1
        print(f"{config}: {filled} trial records filled, {missing} without their tuning runs here")


if __name__ == "__main__":
    main()
