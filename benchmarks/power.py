"""What evidence v3's design can detect, stated before its runs: for each pair, the paired 95% CI half-width of a
difference and the effect detectable with 80% power after Holm (planned as Bonferroni over the pair's family, the
strictest step of Holm), for 8 final seeds, across the paired standard deviations the committed grids measured.

    python benchmarks/power.py      # writes benchmarks/results/evidence_v3_design/power.{md,json}
                                    # and, for the v3 grids with final runs, measured.{md,json}

The paired sd of v3's regime (children from scratch) is not known before it runs: the tuning runs are one seed
per setting and carry no seed-to-seed spread. The planning values are read from committed summaries: evidence v2's
paired sds of HKT against kd (children fine-tuned, 0.06-0.38 points) and the from-scratch ViT smoke grid
(compare_vit_child_cpu: hkt - kd over 3 seeds). The seeds needed for a 0.3-point half-width are given for each.
After the runs, ``measured.md`` gives the same quantities at the paired sds the v3 grids measured.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from scipy.stats import nct
from scipy.stats import t as student_t

from hkt.io import write_atomic

RESULTS = Path("benchmarks/results")
OUT = RESULTS / "evidence_v3_design"
SEEDS = 8
PAIRS = {  # pair: (methods, references); the Holm family counts each unordered pair once
    "A (ResNet-8)": (["ce", "kd", "kd_ls", "dkd", "dist", "hkt"], ["ce", "kd", "dkd"]),
    "B (ViT)": (["ce", "kd", "hkt"], ["ce", "kd"]),
}
GRIDS = {"A (ResNet-8)": "evidence_v3_resnet8", "B (ViT)": "evidence_v3_vit"}


def family(methods: list[str], refs: list[str]) -> int:
    return len({frozenset((m, r)) for m in methods for r in refs if m != r})


def half_width(sd: float, n: int) -> float:
    return float(student_t.ppf(0.975, n - 1)) * sd / math.sqrt(n)


def detectable(sd: float, n: int, alpha: float, power: float = 0.8) -> float:
    """Smallest true paired mean difference a two-sided paired t-test at ``alpha`` detects with ``power``."""
    crit = float(student_t.ppf(1 - alpha / 2, n - 1))
    lo, hi = 0.0, 20.0 * sd
    for _ in range(60):  # bisection on the noncentrality parameter
        mid = (lo + hi) / 2
        if 1 - nct.cdf(crit, n - 1, mid * math.sqrt(n) / sd) + nct.cdf(-crit, n - 1, mid * math.sqrt(n) / sd) < power:
            lo = mid
        else:
            hi = mid
    return hi


def seeds_for(sd: float, target: float) -> int:
    n = 2
    while half_width(sd, n) > target:
        n += 1
    return n


def planning_sds() -> dict[str, float]:
    """Paired sd (points) of hkt - kd in the committed grids."""
    out = {}
    for grid in ("evidence_v2_cifar10_b1", "evidence_v2_cifar10_b2", "compare_vit_child_cpu"):
        rows = json.loads((RESULTS / grid / "summary.json").read_text())["by_metric"]["test_acc"]["rows"]
        d = next(r["vs_kd"] for r in rows if r["method"] == "hkt")
        out[f"{grid}: hkt - kd ({d['n']} seeds)"] = 100 * d["std_diff"]
    return out


def power(sd: float, n: int, family_size: int) -> dict[str, float]:
    """What ``n`` paired seeds at paired sd ``sd`` can see, in a Holm family of ``family_size``."""
    return {
        "sd": sd,
        "seeds": n,
        "half_width": half_width(sd, n),
        "detectable": detectable(sd, n, 0.05 / family_size),
        "seeds_for_0.3": seeds_for(sd, 0.3),
    }


def write_table(name: str, heading: list[str], first: list[str], table: list[dict[str, Any]]) -> None:
    """``OUT/<name>.md`` (``heading``, then one row per entry: its ``first`` columns, then the power columns) and
    ``OUT/<name>.json``."""
    lines = [
        *heading,
        "",
        f"| {' | '.join(first)} | sd | seeds | CI half-width | detectable (80% power) | seeds for a 0.3 half-width |",
        "|---" * (len(first) + 5) + "|",
    ]
    for r in table:
        cells = [str(r[c]) for c in first]
        cells += [f"{r['sd']:.2f}", str(r["seeds"]), f"±{r['half_width']:.2f}", f"{r['detectable']:.2f}", str(r["seeds_for_0.3"])]
        lines.append(f"| {' | '.join(cells)} |")
    write_atomic(OUT / f"{name}.md", "\n".join(lines) + "\n")
    write_atomic(OUT / f"{name}.json", json.dumps(table, indent=1) + "\n")
    print("\n".join(lines))


def main() -> None:
    sds = planning_sds()
    table = []
    for pair, (methods, refs) in PAIRS.items():
        m = family(methods, refs)
        table += [{"pair": pair, "Holm family": m, "planning sd from": source, **power(sd, SEEDS, m)} for source, sd in sds.items()]
    heading = [
        "# Evidence v3: what 8 final seeds can detect (stated before the runs)",
        "",
        "`python benchmarks/power.py`. Paired differences in test accuracy points. Half-width: of the paired 95% t CI with "
        f"{SEEDS} seeds. Detectable: the true difference a two-sided paired t-test finds with 80% power at alpha = 0.05 / "
        "(family size), Holm's strictest step (Holm is never stricter, so these bound what the design can see). The Holm "
        "family counts each unordered pair of a method and a reference once.",
    ]
    write_table("power", heading, ["pair", "Holm family", "planning sd from"], table)
    measured()


def measured() -> None:
    """The same quantities at the paired sds each v3 grid measured, for every distinct comparison of its summary."""
    table = []
    for pair, grid in GRIDS.items():
        path = RESULTS / grid / "summary.json"
        if not path.is_file():
            continue
        m, seen = family(*PAIRS[pair]), set()
        for r in json.loads(path.read_text())["by_metric"]["test_acc"]["rows"]:
            for ref in PAIRS[pair][1]:
                d = r.get(f"vs_{ref}")
                if d is not None and frozenset((r["method"], ref)) not in seen:
                    seen.add(frozenset((r["method"], ref)))
                    table.append({"pair": pair, "comparison": f"{r['method']} - {ref}", **power(100 * d["std_diff"], d["n"], m)})
    heading = [
        "# Evidence v3: what the final seeds could detect, at the paired sds they measured",
        "",
        "`python benchmarks/power.py`. As in `power.md` (same family sizes), with each comparison's own paired sd from "
        "its grid's committed summary instead of a planning value.",
    ]
    write_table("measured", heading, ["pair", "comparison"], table)


if __name__ == "__main__":
    main()
