"""Evidence v4's design, stated before its runs: the background budget (from measured step times and v3's measured
run times) and what its seeds can detect (from v3's measured paired sds).

    python benchmarks/evidence_v4_design.py     # writes benchmarks/results/evidence_v4_design/{budget,power}.{md,json}

**Budget.** A run's wall time is taken from the committed v3 records of the closest v3 method (same child, same
parent-cache situation), scaled by the ratio of median step times measured here, in one sitting, for the new method
and its analog (random CIFAR-sized batches of 128, 2 threads, parent uncached, as ``benchmarks/step_cost.py``), and
by the epoch count. Each seed stream's first parent reader pays the parent's forward (it fills the cache), the
others read the cache. Cuts are applied in the issue's order until the estimate is at most 10 hours.

**Power.** As ``benchmarks/power.py``: paired 95% CI half-width and the effect detectable with 80% power at
alpha = 0.05 / (Holm family size), at the paired sds that v3 measured for the same child (cell A: pair A's hkt
comparisons; cell B': pair B's).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _timing import median_step, training_step  # noqa: E402
from hkt.io import write_atomic  # noqa: E402
from power import detectable, half_width, seeds_for  # noqa: E402

RESULTS = Path("benchmarks/results")
OUT = RESULTS / "evidence_v4_design"
HOURS = 10.0
B_HOURS = "cell B' hours"
VIT = {"arch": "timm:vit_tiny_patch16_224", "options": {"img_size": 32, "patch_size": 4, "embed_dim": 96, "depth": 4, "num_heads": 3}}
RESNET8 = {"arch": "resnet8"}
STEPS = {  # (child, method options) whose median step is measured
    "resnet8 kd": (RESNET8, {"name": "kd"}),
    "resnet8 hkt pooled": (RESNET8, {"name": "hkt", "genes": ["avgpool"]}),
    "resnet8 hkt stages": (RESNET8, {"name": "hkt", "genes": ["layer1", "layer2", "layer3"]}),
    "vit kd": (VIT, {"name": "kd"}),
    "vit deit": (VIT, {"name": "deit"}),
    "vit hkt stages": (VIT, {"name": "hkt", "genes": ["layer2:blocks.1", "layer3:blocks.3"]}),
    "vit hkt pooled": (VIT, {"name": "hkt", "genes": ["avgpool:fc_norm"]}),
}


def measure_steps(steps: int = 15) -> dict[str, float]:
    from hkt.methods import build_method
    from hkt.models import build_model

    torch.set_num_threads(2)
    out = {}
    # the first measurement of a process runs slow (thread pools, allocator): a discarded repeat of the first row
    for label, (child_spec, options) in [("warm-up (discarded)", STEPS["resnet8 kd"]), *STEPS.items()]:
        torch.manual_seed(0)
        parent, child = build_model("resnet56").eval(), build_model(**child_spec)
        x, y = torch.randn(128, 3, 32, 32), torch.randint(0, 10, (128,))
        options = dict(options)
        method = build_method(options.pop("name"), child, parent, x[:2], **options).train()
        opt = (torch.optim.AdamW if child_spec is VIT else torch.optim.SGD)(method.learnable_parameters(), lr=1e-3)
        out[label] = median_step(lambda: training_step(method, opt, x, y), steps, warmup=3)
        print(f"{label}: {out[label]:.3f} s/step", flush=True)
    return {k: v for k, v in out.items() if k in STEPS}


def v3_wall(grid: str, method: str, kind: str) -> float:
    """Median measured wall time (s) of v3 ``grid``'s final runs (``runs``) or tuning trials (``search``)."""
    folder = RESULTS / grid / kind / method
    return statistics.median(json.loads(p.read_text())["fit_wall_s"] for p in folder.glob("*.json"))


def budget(step: dict[str, float]) -> dict:
    """Hours per cell and method under each cut, from v3's measured walls scaled by measured step ratios."""
    a_ce, a_filler = v3_wall("evidence_v3_resnet8", "ce", "runs"), v3_wall("evidence_v3_resnet8", "kd", "runs")
    a_cached = {m: v3_wall("evidence_v3_resnet8", m, "runs") for m in ("hkt",)}
    b_ce, b_filler = v3_wall("evidence_v3_vit", "ce", "runs"), v3_wall("evidence_v3_vit", "kd", "runs")
    b_hkt = v3_wall("evidence_v3_vit", "hkt", "runs")
    cached_logit = statistics.median(v3_wall("evidence_v3_resnet8", m, "runs") / a_ce for m in ("dkd", "dist", "kd_ls"))
    per_run = {  # seconds per run at v3's epochs (A: 3, B: 1)
        "A hkt_low": a_cached["hkt"],  # v3's hkt, cached: only w_parent's range changes
        # uncached every step (the stage maps do not fit the cache), like v3 A's kd, which filled the cache
        "A hkt_stages": a_filler * step["resnet8 hkt stages"] / step["resnet8 kd"],
        "B ce": b_ce,
        "B kd": b_ce * cached_logit,
        "B dkd": b_ce * cached_logit,
        "B deit": b_ce * cached_logit * step["vit deit"] / step["vit kd"],
        "B hkt_stages": b_hkt,
        "B hkt_pooled": b_hkt * step["vit hkt pooled"] / step["vit hkt stages"],
        "B cache fill (once per seed stream)": b_filler - b_ce * cached_logit,
    }
    plans = {
        "as asked (B' 3 epochs, hkt_pooled, 8 seeds)": (3, True, 8),
        "cut 1: B' to 2 epochs": (2, True, 8),
        "cut 2: B' to 2 epochs, no hkt_pooled": (2, False, 8),
        "cut 3: B' to 2 epochs, no hkt_pooled, 6 seeds in B'": (2, False, 6),
    }
    rows, chosen = [], None
    for plan, (epochs, pooled, seeds) in plans.items():
        # 8 trials + 8 final seeds per new method: cell A pairs them with v3's 8 seeds, so its seeds are never cut
        a = (8 + 8) * (per_run["A hkt_low"] + per_run["A hkt_stages"])
        b_methods = ["B ce", "B kd", "B dkd", "B deit", "B hkt_stages"] + (["B hkt_pooled"] if pooled else [])
        streams = 1 + seeds  # the tuning seed's stream (all trials share it) and each final seed's
        b = epochs * ((6 + seeds) * sum(per_run[m] for m in b_methods) + streams * per_run["B cache fill (once per seed stream)"])
        hours = (a + b) / 3600
        rows.append(
            {
                "plan": plan,
                "epochs": epochs,
                "hkt_pooled": pooled,
                "seeds": seeds,
                "cell A hours": a / 3600,
                B_HOURS: b / 3600,
                "total hours": hours,
            }
        )
        if chosen is None and hours <= HOURS:
            chosen = plan
    return {"per_run_s_at_v3_epochs": per_run, "measured_step_s": step, "plans": rows, "chosen": chosen, "limit_hours": HOURS}


def family(methods: list[str], pairs: int = 0) -> int:
    """Distinct comparisons of every method with ce, kd and dkd, plus the grid's extra pairs."""
    return len({frozenset((m, r)) for m in methods for r in ("ce", "kd", "dkd") if m != r}) + pairs


def power_table(plan: dict) -> list[dict]:
    """Half-width and detectable effect per cell under the chosen plan, at each v3 measured paired sd of the same child."""
    b_methods = ["ce", "kd", "dkd", "deit", "hkt_stages"] + (["hkt_pooled"] if plan["hkt_pooled"] else [])
    cells = {  # cell: (comparisons whose v3 sd plans it, Holm family, seeds)
        "A": (["hkt - ce", "hkt - kd", "hkt - dkd"], family(["ce", "kd", "kd_ls", "dkd", "dist", "hkt", "hkt_stages", "hkt_low"], 2), 8),
        "B'": (["hkt - ce", "ce - kd", "hkt - kd"], family(b_methods), plan["seeds"]),
    }
    measured = {
        (r["pair"][0], r["comparison"]): r["sd"] for r in json.loads((RESULTS / "evidence_v3_design" / "measured.json").read_text())
    }
    table = []
    for cell, (comparisons, fam, seeds) in cells.items():
        for c in comparisons:
            sd = measured[("A" if cell == "A" else "B", c)]
            table.append(
                {
                    "cell": cell,
                    "planning sd from v3": c,
                    "sd": sd,
                    "Holm family": fam,
                    "seeds": seeds,
                    "half_width": half_width(sd, seeds),
                    "detectable": detectable(sd, seeds, 0.05 / fam),
                    "seeds_for_0.3": seeds_for(sd, 0.3),
                }
            )
    return table


def main() -> None:
    plan = budget(measure_steps())
    lines = [
        "# Evidence v4: background budget (stated before the runs)",
        "",
        "`python benchmarks/evidence_v4_design.py`. Seconds per run at v3's epochs (A 3, B 1), from v3's committed run "
        "walls scaled by step times measured here (2 threads, batch 128, parent uncached):",
        "",
        "| run | s |",
        "|---|---|",
        *[f"| {k} | {v:.0f} |" for k, v in plan["per_run_s_at_v3_epochs"].items()],
        "",
        "| plan | cell A (h) | cell B' (h) | total (h) |",
        "|---|---|---|---|",
        *[f"| {r['plan']} | {r['cell A hours']:.1f} | {r[B_HOURS]:.1f} | {r['total hours']:.1f} |" for r in plan["plans"]],
        "",
        f"Chosen (the first plan within {HOURS:g} hours): **{plan['chosen']}**.",
    ]
    OUT.mkdir(parents=True, exist_ok=True)
    write_atomic(OUT / "budget.md", "\n".join(lines) + "\n")
    write_atomic(OUT / "budget.json", json.dumps(plan, indent=1) + "\n")
    table = power_table(next(r for r in plan["plans"] if r["plan"] == plan["chosen"]))
    lines = [
        "# Evidence v4: what its seeds can detect (stated before the runs)",
        "",
        "`python benchmarks/evidence_v4_design.py`. Paired test-accuracy differences in points, planned at the paired sds "
        "v3 measured for the same child. Detectable: the true difference a two-sided paired t-test finds with 80% power at "
        "alpha = 0.05 / (Holm family), Holm's strictest step.",
        "",
        "| cell | planning sd from v3 | sd | Holm family | seeds | CI half-width | detectable (80% power) | seeds for a 0.3 half-width |",
        "|---|---|---|---|---|---|---|---|",
        *[
            f"| {r['cell']} | {r['planning sd from v3']} | {r['sd']:.2f} | {r['Holm family']} | {r['seeds']} | ±{r['half_width']:.2f} | "
            f"{r['detectable']:.2f} | {r['seeds_for_0.3']} |"
            for r in table
        ],
    ]
    write_atomic(OUT / "power.md", "\n".join(lines) + "\n")
    write_atomic(OUT / "power.json", json.dumps(table, indent=1) + "\n")
    print((OUT / "budget.md").read_text() + "\n" + (OUT / "power.md").read_text())


if __name__ == "__main__":
    main()
