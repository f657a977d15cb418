"""One-off migration (issue 9): the grids summarised before per-run records were committed kept only
``summary.json``, whose rows hold per-seed values (test metric(s), validation, last-epoch test, wall and step
times). This rebuilds minimal per-run records ``runs/<method>/seed<k>.json`` from them, marked
``migrated_from``, then regenerates each summary with the current code, so every committed summary can be
rebuilt with ``hkt compare --summarize-only``. Per-epoch histories (curves, gates) were not kept and are not
invented: the existing plots stay as they were drawn from the original runs.

    python benchmarks/migrate_summaries.py        # idempotent: grids that already have records are skipped
"""

from __future__ import annotations

import json
from pathlib import Path

from hkt.compare.grid import load_grid
from hkt.compare.summary import summarize
from hkt.io import write_atomic

ROOT = Path(__file__).resolve().parents[1]
GRIDS = {
    "cifar10_cpu": "configs/compare_cifar10_cpu.yaml",
    "fashion_mnist": "configs/compare_fashion_mnist.yaml",
    "lits_cpu": "configs/compare_lits_cpu.yaml",
    "flow_cpu": "configs/compare_flow_cpu.yaml",
}
SOURCE = (
    "summary.json at commit 68aff47, written by the harness before issue 9 (per-epoch lr schedules, one lr for every "
    "method, FitNet without a regressor when shapes agreed, AT at beta/2 = 500)"
)


def migrate(name: str, config: str) -> None:
    grid = load_grid(ROOT / config)
    out = ROOT / grid["out_dir"]
    if (out / "runs").is_dir():
        print(f"{name}: records exist, skipped")
        return
    old = json.loads((out / "summary.json").read_text())
    metric = old["metric"]
    by_metric = old["by_metric"] if "by_metric" in old else {metric["test"]: old["rows"]}
    val_key = f"{metric['val'].replace('/', '_')}_best"
    records: dict[tuple[str, int], dict] = {}
    for key, rows in by_metric.items():
        for row in rows:
            for i, seed in enumerate(row["seeds"]):
                rec = records.setdefault((row["method"], seed), {"migrated_from": SOURCE, "seed": seed})
                rec[key] = row["test"][i]
                if len(row["test_last_epoch"]) == len(row["seeds"]):
                    rec[f"{key}_last_epoch"] = row["test_last_epoch"][i]
                rec[val_key] = row["val"][i]
                rec["fit_wall_s"] = row["wall_s"][i]
                if len(row["median_step_s"]) == len(row["seeds"]):
                    rec["median_step_s"] = row["median_step_s"][i]
    for (method, seed), rec in sorted(records.items()):
        write_atomic(out / "runs" / method / f"seed{seed}.json", json.dumps(rec, indent=1) + "\n")
    summarize(grid)
    print(f"{name}: {len(records)} records rebuilt from summary.json; summary regenerated")


if __name__ == "__main__":
    import os

    os.chdir(ROOT)
    for name, config in GRIDS.items():
        migrate(name, config)
