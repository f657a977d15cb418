"""What the parent cache saves on one grid: ``configs/parent_cache_benchmark.yaml`` (5 methods x 3 seeds, ResNet-56
-> ResNet-8 from scratch, 1 epoch on 20,000 CIFAR-10 JPEG images) run without the cache, then with a fresh one.

    OMP_NUM_THREADS=2 python benchmarks/parent_cache.py      # about 31 minutes on 2 cores (measured); run it alone

Writes per-run records and summaries to ``benchmarks/results/parent_cache/{uncached,cached}/`` and the comparison
to ``benchmarks/results/parent_cache/parent_cache.{md,json}``: total training wall time of each grid, per-run time of
every method cold (the first parent run of a seed, which fills the cache) and warm (later methods, which read it),
each warm method's time over ``ce``'s on the same child, and whether cached runs equal uncached ones (test accuracy
and validation curve, exactly). Resumable: finished runs are read back, so a stopped benchmark continues; timings
of a resumed grid mix sittings and say so (``resumed``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

GRID = Path("configs/parent_cache_benchmark.yaml")
OUT = Path("benchmarks/results/parent_cache")


def run(grid: dict[str, Any]) -> dict[str, Any]:
    from hkt.compare.records import load_records
    from hkt.compare.run import run_grid

    before = sum(len(v) for v in load_records(grid["out_dir"]).values())
    start = time.perf_counter()
    run_grid(grid)
    return {"elapsed_s": time.perf_counter() - start, "resumed": before > 0, "records": load_records(grid["out_dir"])}


def compare(plain: dict[str, Any], cached: dict[str, Any], methods: list[str], seeds: list[int]) -> dict[str, Any]:
    def wall(records: dict[str, Any], m: str) -> list[float]:
        return [records[m][s]["fit_wall_s"] for s in seeds]

    ce = statistics.mean(wall(cached["records"], "ce"))
    per_method = {}
    for m in methods:
        rec = [cached["records"][m][s] for s in seeds]
        cache = [r.get("parent_cache") for r in rec]
        per_method[m] = {
            "uncached_s": statistics.mean(wall(plain["records"], m)),
            "cached_s": statistics.mean(wall(cached["records"], m)),
            "role": "no parent" if cache[0] is None else "cold" if cache[0]["misses"] else "warm",
            "over_ce_cached": statistics.mean(wall(cached["records"], m)) / ce,
            "over_ce_uncached": statistics.mean(wall(plain["records"], m)) / statistics.mean(wall(plain["records"], "ce")),
            "hits": sum(c["hits"] for c in cache if c),
            "misses": sum(c["misses"] for c in cache if c),
            "saved_s": statistics.mean(c["saved_s"] for c in cache) if cache[0] else None,
            "same_result": all(
                plain["records"][m][s]["test_acc"] == cached["records"][m][s]["test_acc"]
                and [e.get("val/acc") for e in plain["records"][m][s]["epochs"]]
                == [e.get("val/acc") for e in cached["records"][m][s]["epochs"]]
                for s in seeds
            ),
        }
    totals = {
        k: sum(r["fit_wall_s"] for m in methods for r in g["records"][m].values()) for k, g in (("uncached", plain), ("cached", cached))
    }
    warm = [m for m, v in per_method.items() if v["role"] == "warm"]
    return {
        "methods": per_method,
        "train_wall_s": totals,
        "elapsed_s": {"uncached": plain["elapsed_s"], "cached": cached["elapsed_s"]},
        "resumed": {"uncached": plain["resumed"], "cached": cached["resumed"]},
        "speedup": totals["uncached"] / totals["cached"],
        "goals": {
            "warm kd and hkt within 1.2x of ce": {m: per_method[m]["over_ce_cached"] <= 1.2 for m in ("kd", "hkt") if m in warm},
            "grid at least 3x faster": totals["uncached"] / totals["cached"] >= 3.0,
        },
    }


def markdown(result: dict[str, Any], command: str) -> str:
    lines = [
        "# Parent cache: one grid with and without it",
        "",
        f"`{command}` (grid `{GRID}`). Times are each run's training wall time (`fit_wall_s`: the fit with its validation and "
        "checkpoints; not process start-up, data decoding or the test pass), mean over the seeds, measured on this machine "
        "in one sitting per grid" + (" (a grid was resumed: its times mix sittings)" if any(result["resumed"].values()) else "") + ".",
        "",
        "| method | role in the cached grid | uncached (s) | cached (s) | cached / cached ce | uncached / uncached ce | hits / "
        "misses | parent compute saved per run (s) | same result |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m, v in result["methods"].items():
        saved = "–" if v["saved_s"] is None else f"{v['saved_s']:.1f}"
        lines.append(
            f"| {m} | {v['role']} | {v['uncached_s']:.1f} | {v['cached_s']:.1f} | {v['over_ce_cached']:.2f}x | "
            f"{v['over_ce_uncached']:.2f}x | "
            f"{v['hits']} / {v['misses']} | {saved} | {'yes' if v['same_result'] else 'NO'} |"
        )
    t, e = result["train_wall_s"], result["elapsed_s"]
    goals = result["goals"]
    lines += [
        "",
        f"Whole grid: {t['uncached']:,.0f} s of training uncached, {t['cached']:,.0f} s cached: **{result['speedup']:.2f}x** faster "
        f"(elapsed, with start-up and tests: {e['uncached']:,.0f} s and {e['cached']:,.0f} s).",
        "",
        "Goals: warm `kd` and pooled-gene `hkt` within 1.2x of `ce`: "
        + ", ".join(
            f"`{m}` {'met' if ok else 'missed'} ({result['methods'][m]['over_ce_cached']:.2f}x)"
            for m, ok in goals["warm kd and hkt within 1.2x of ce"].items()
        )
        + f"; the grid at least 3x faster: {'met' if goals['grid at least 3x faster'] else 'missed'} ({result['speedup']:.2f}x).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    from hkt.compare.spec import load_grid
    from hkt.io import write_atomic

    cached_grid = load_grid(GRID)
    plain_grid = dict(
        cached_grid,
        name=f"{cached_grid['name']}, without the parent cache",
        out_dir=str(OUT / "uncached"),
        work_dir="runs/compare/parent_cache_uncached",
        common={**cached_grid["common"], "parent_cache": None},
    )
    plain = run(plain_grid)
    cached = run(cached_grid)
    result = compare(plain, cached, list(cached_grid["methods"]), cached_grid["seeds"])
    command = "OMP_NUM_THREADS=2 python benchmarks/parent_cache.py"
    write_atomic(OUT / "parent_cache.json", json.dumps({"command": command, **result}, indent=1) + "\n")
    write_atomic(OUT / "parent_cache.md", markdown(result, command))
    print(markdown(result, command))


if __name__ == "__main__":
    main()
