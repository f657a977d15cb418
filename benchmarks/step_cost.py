"""Cost of one training step per method, relative to KD, for the same parent and child.

    python benchmarks/step_cost.py [--steps 30] [--batch 128] [--out benchmarks/results/step_cost]

Three pairs, CIFAR-sized random input (cost does not depend on pixel values), optimiser step included:
ResNet-56 parent -> ResNet-20 child (every method); ResNet-56 parent -> the ViT child of
``configs/compare_vit_child_cpu.yaml`` (CNN-stage -> ViT-block genes); a ViT (dim 192) parent -> a ViT (dim 96)
child with one block gene. Each row runs in its own process so that peak memory (peak RSS growth during the
steps, over the RSS after building) is not polluted by the others; "vs kd" compares with KD on the same pair.
Also times inference of the exported HKT child against a plain ResNet-20. Writes ``<out>.json`` and ``<out>.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
from pathlib import Path

import torch

from _timing import median_step, rss_mb, training_step

VIT = {"arch": "timm:vit_tiny_patch16_224", "options": {"img_size": 32, "patch_size": 4, "embed_dim": 96, "depth": 4, "num_heads": 3}}
VIT_PARENT = {
    "arch": "timm:vit_tiny_patch16_224",
    "options": {"img_size": 32, "patch_size": 4, "embed_dim": 192, "depth": 6, "num_heads": 3},
}
PAIRS = {  # name: (parent, child, {row label: method options})
    "ResNet-56 -> ResNet-20": ({"arch": "resnet56"}, {"arch": "resnet20"}, None),  # METHODS below
    "ResNet-56 -> ViT (patch 4, dim 96, depth 4)": (
        {"arch": "resnet56"},
        VIT,
        {
            "ce": {"name": "ce"},
            "kd": {"name": "kd"},
            "hkt (one block gene: layer3 -> blocks.3)": {"name": "hkt", "genes": ["layer3:blocks.3"]},
            "hkt (two block genes: layer2 -> blocks.1, layer3 -> blocks.3)": {
                "name": "hkt",
                "genes": ["layer2:blocks.1", "layer3:blocks.3"],
            },
        },
    ),
    "ViT (dim 192, depth 6) -> ViT (dim 96, depth 4)": (
        VIT_PARENT,
        VIT,
        {
            "kd": {"name": "kd"},
            "hkt (one block gene: blocks.5 -> blocks.3)": {"name": "hkt", "genes": ["blocks.5:blocks.3"]},
        },
    ),
}

# the children users deploy on edge devices, under a timm ResNet-50 parent, one stage gene at stride 16 (issue 35's
# table): `--pairs edge` (64 px, batch 32 by default there) writes benchmarks/results/step_cost_edge.{md,json}
EDGE_PARENT = {"arch": "timm:resnet50"}
EDGE_PAIRS = {
    f"timm ResNet-50 -> timm {name}": (
        EDGE_PARENT,
        {"arch": f"timm:{arch}"},
        {
            "ce": {"name": "ce"},
            "kd": {"name": "kd"},
            f"hkt (one stage gene: layer3 -> {gene})": {"name": "hkt", "genes": [f"layer3:{gene}"]},
        },
    )
    for name, arch, gene in (
        ("ResNet-18", "resnet18", "layer3"),
        ("MobileNetV3-Large", "mobilenetv3_large_100", "blocks.4"),
        ("EfficientNet-B0", "efficientnet_b0", "blocks.4"),
    )
}

METHODS = {
    "ce": {"name": "ce"},
    "kd": {"name": "kd"},
    "dkd": {"name": "dkd"},
    "dist": {"name": "dist"},
    "fitnet": {"name": "fitnet", "genes": "layer2"},
    "at": {"name": "at", "genes": ["layer1", "layer2", "layer3"]},
    "reviewkd": {"name": "reviewkd", "genes": ["layer1", "layer2", "layer3", "avgpool"]},
    "hkt (pooled gene, reference)": {"name": "hkt", "genes": ["avgpool"]},
    "hkt (pooled gene, lepoket GA)": {"name": "hkt", "genes": ["avgpool"], "attention": "lepoket"},
    "hkt (genes after each stage)": {"name": "hkt", "genes": ["layer1", "layer2", "layer3"]},
    "hkt (stages + pooled)": {"name": "hkt", "genes": ["layer1", "layer2", "layer3", "avgpool"]},
    "hkt + kd (pooled gene)": {"name": "hkt", "genes": ["avgpool"], "kd_weight": 1.0},
}


ALL_PAIRS = {**PAIRS, **EDGE_PAIRS}


def rows_of(pair: str) -> dict:
    return ALL_PAIRS[pair][2] or METHODS


def measure(pair: str, label: str, steps: int, batch: int, size: int) -> dict:
    from hkt.methods import build_method
    from hkt.models import build_model

    torch.manual_seed(0)
    parent_spec, child_spec, _ = ALL_PAIRS[pair]
    parent, child = build_model(**parent_spec).eval(), build_model(**child_spec)
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    options = dict(rows_of(pair)[label])
    method = build_method(options.pop("name"), child, parent, x[:2], **options).train()
    method.to(memory_format=torch.channels_last)
    vit = child_spec["arch"].startswith("timm:vit")
    # the optimiser each child trains with in this project's configs: AdamW for ViTs, SGD for CNNs
    opt = (
        torch.optim.AdamW(method.learnable_parameters(), lr=1e-3, weight_decay=0.05)
        if vit
        else torch.optim.SGD(method.learnable_parameters(), lr=0.01, momentum=0.9)
    )

    base_rss = rss_mb()
    median = median_step(lambda: training_step(method, opt, x, y), steps, warmup=3)
    return {
        "pair": pair,
        "method": label,
        "engine": "stacked" if getattr(getattr(method, "inheritance", None), "stacked", True) else "reference",
        "median_step_s": median,
        "steps": steps,
        "peak_rss_growth_mb": rss_mb() - base_rss,
    }


def inference_latency(batch: int, reps: int = 30) -> dict:
    """Exported HKT child vs a plain ResNet-20: same class, same parameters, same latency expected."""
    from hkt.methods import build_method
    from hkt.models import build_model

    x = torch.randn(batch, 3, 32, 32)
    plain = build_model("resnet20").eval()
    method = build_method("hkt", build_model("resnet20"), build_model("resnet56"), x[:2], genes=["avgpool"])
    exported = method.export_child()

    def median_time(m: torch.nn.Module) -> float:
        with torch.inference_mode():
            return median_step(lambda: m(x), reps, warmup=3)

    # interleave to share any drift in machine load
    plain_t, exp_t = [], []
    for _ in range(3):
        plain_t.append(median_time(plain))
        exp_t.append(median_time(exported))
    return {
        "batch": batch,
        "plain_resnet20_s": statistics.median(plain_t),
        "exported_hkt_child_s": statistics.median(exp_t),
        "latency_ratio": statistics.median(exp_t) / statistics.median(plain_t),
        "params_plain": sum(p.numel() for p in plain.parameters()),
        "params_exported": sum(p.numel() for p in exported.parameters()),
        "same_state_dict_keys": list(plain.state_dict()) == list(exported.state_dict()),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--pairs", choices=("cifar", "edge"), default="cifar", help="edge: timm ResNet-50 -> MobileNet / EfficientNet")
    ap.add_argument("--size", type=int, default=None, help="input side (default 32; 64 for --pairs edge)")
    ap.add_argument("--out", default=None, help="default benchmarks/results/step_cost (step_cost_edge for --pairs edge)")
    ap.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    size = args.size or (64 if args.pairs == "edge" else 32)
    if args.one:
        print(json.dumps(measure(*args.one, args.steps, args.batch, size)))
        return
    pairs = EDGE_PAIRS if args.pairs == "edge" else PAIRS
    args.out = args.out or f"benchmarks/results/step_cost{'_edge' if args.pairs == 'edge' else ''}"
    rows = []
    for pair in pairs:
        for label in rows_of(pair):
            proc = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--one",
                    pair,
                    label,
                    "--steps",
                    str(args.steps),
                    "--batch",
                    str(args.batch),
                    "--size",
                    str(size),
                ],
                check=True,
                capture_output=True,
                text=True,
            )
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    for r in rows:
        kd = next(k for k in rows if k["pair"] == r["pair"] and k["method"] == "kd")
        r["time_vs_kd"] = r["median_step_s"] / kd["median_step_s"]
        r["memory_vs_kd"] = r["peak_rss_growth_mb"] / kd["peak_rss_growth_mb"]
    latency = inference_latency(args.batch) if args.pairs == "cifar" else None
    command = f"python benchmarks/step_cost.py --steps {args.steps} --batch {args.batch}"
    record = {
        "command": command + (f" --pairs edge --size {size}" if args.pairs == "edge" else ""),
        "setup": f"batch {args.batch}, 3x{size}x{size}, CPU, channels_last, optimiser step included (SGD; AdamW for ViT children)",
        "machine": {"cpu_threads": torch.get_num_threads(), "platform": platform.platform(), "torch": torch.__version__},
        "rows": rows,
        "inference": latency,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(record, indent=1))
    lines = [
        f"# Training step cost ({record['setup']})",
        "",
        f"`{record['command']}` on {torch.get_num_threads()} CPU threads, torch {torch.__version__}; median over {args.steps} "
        f"steps after 3 warm-up steps.",
    ]
    for pair in pairs:
        lines += [
            "",
            f"{pair}:",
            "",
            "| method | engine | median step (s) | time vs kd | peak RSS growth (MB) | memory vs kd |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['method']} | {r['engine'] if r['method'].startswith('hkt') else '–'} | {r['median_step_s']:.3f} | "
            f"{r['time_vs_kd']:.2f}x | {r['peak_rss_growth_mb']:.0f} | {r['memory_vs_kd']:.2f}x |"
            for r in rows
            if r["pair"] == pair
        ]
    if latency is None:
        out.with_suffix(".md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
        return
    lines += [
        "",
        f"Exported HKT child vs plain ResNet-20, inference at batch {args.batch}: {latency['exported_hkt_child_s'] * 1e3:.1f} ms vs "
        f"{latency['plain_resnet20_s'] * 1e3:.1f} ms (ratio {latency['latency_ratio']:.2f}); parameters "
        f"{latency['params_exported']} vs {latency['params_plain']}; identical state_dict keys: {latency['same_state_dict_keys']}.",
    ]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
