"""Cost of one training step per method, relative to KD, for the same parent and child, all pairs in one sitting.

    python benchmarks/step_cost.py [--steps 30] [--batch 128] [--edge-batch 64] [--edge-size 128]

Random input (cost does not depend on pixel values), optimiser step included. CIFAR-sized (32 px, ``--batch``):
ResNet-56 parent -> ResNet-20 child (every method); ResNet-56 parent -> the ViT child of
``configs/compare_vit_child_cpu.yaml`` (CNN-stage -> ViT-block genes); a ViT (dim 192) parent -> a ViT (dim 96)
child with one block gene. The children users deploy (``--edge-size`` px, ``--edge-batch``): a timm ResNet-50 parent
and timm ResNet-18, MobileNetV3-Large and EfficientNet-B0 children, one stage gene and three stage genes; each HKT
row there also times its *floor*, what the step must compute beyond KD: the child's layers after its first gene
(forward and backward, the inherited path) and the parent's layers after its last gene (forward and backward, the
parent term), each measured as a full pass minus the pass up to the gene; and beside it the floor plus the genes'
Transfer and Genetic Attention (forward and backward on the batch, timed alone), so that what remains between that
and the step is the engine's own cost (forking the paths, hooks). Each row runs in its own process so that
peak memory (peak RSS growth during the steps, over the RSS after building) is not polluted by the others; "vs kd"
compares with KD on the same pair. Also times inference of the exported HKT child against a plain ResNet-20.
Writes ``<out>.json`` and ``<out>.md`` (default ``benchmarks/results/step_cost``).
"""

from __future__ import annotations

import argparse
import json
import os
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

# the children users deploy on edge devices, under a timm ResNet-50 parent: one stage gene at stride 16, and three
# stage genes at strides 4, 8, 16 (the parent's layer1..3 into the child's matching stages)
EDGE_PARENT = {"arch": "timm:resnet50"}
EDGE_PAIRS = {
    f"timm ResNet-50 -> timm {name}": (
        EDGE_PARENT,
        {"arch": f"timm:{arch}"},
        {
            "ce": {"name": "ce"},
            "kd": {"name": "kd"},
            f"hkt (one stage gene: layer3 -> {stages[2]})": {"name": "hkt", "genes": [f"layer3:{stages[2]}"]},
            f"hkt (three stage genes: layer1..3 -> {', '.join(stages)})": {
                "name": "hkt",
                "genes": [f"layer{k + 1}:{c}" for k, c in enumerate(stages)],
            },
        },
    )
    for name, arch, stages in (
        ("ResNet-18", "resnet18", ("layer1", "layer2", "layer3")),
        ("MobileNetV3-Large", "mobilenetv3_large_100", ("blocks.1", "blocks.2", "blocks.4")),
        ("EfficientNet-B0", "efficientnet_b0", ("blocks.1", "blocks.2", "blocks.4")),
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
    row = {
        "pair": pair,
        "method": label,
        "engine": "one pass" if getattr(getattr(method, "inheritance", None), "one_pass", True) else "reference",
        "median_step_s": median,
        "steps": steps,
        "peak_rss_growth_mb": rss_mb() - base_rss,
    }
    if pair in EDGE_PAIRS and label.startswith("hkt"):
        genes = method.inheritance.genes
        first_child = genes[method.inheritance.child_order[0]].child
        last_parent = genes[method.inheritance.parent_order[-1]].parent
        row["child_after_gene_s"] = tail_cost(child, first_child, x, steps, grad_before=True)
        row["parent_after_gene_s"] = tail_cost(parent, last_parent, x, steps, grad_before=False)
        row["mixes_s"] = mixes_cost(method, x, steps)
    return row


def mixes_cost(method: torch.nn.Module, x: torch.Tensor, steps: int) -> float:
    """Seconds of every gene's Transfer and Genetic Attention, forward and backward, once on the batch: what a step
    computes beyond the floor at the genes themselves (the child's gene features as leaves that need gradient)."""
    from hkt.core.extract import extracting

    inh = method.inheritance
    with torch.no_grad(), extracting(method.parent, inh.genes, "parent") as v, extracting(method.child, inh.genes, "child") as q:
        method.parent(x), method.child(x)
    feats = [(q[g.child].detach().requires_grad_(), v[g.parent]) for g in inh.genes]

    def mixes() -> None:
        sum(inh.mix(i, qi, vi).float().square().mean() for i, (qi, vi) in enumerate(feats)).backward()

    return median_step(mixes, steps, warmup=2)


def measure_apart(pair: str, label: str, batch: int, size: int, steps: int, src: str | None = None) -> dict:
    """One row (:func:`measure`) in a process of its own, so that its peak memory is its own; ``src``: a ``src/``
    folder put first on ``PYTHONPATH`` (another commit's engine)."""
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, __file__, "--one", pair, label, str(batch), str(size), "--steps", str(steps)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


class _Stop(Exception):
    """Ends a timed forward at a gene (benchmark only: the pass up to the gene)."""


def tail_cost(model: torch.nn.Module, path: str, x: torch.Tensor, steps: int, grad_before: bool) -> float:
    """Seconds of ``model``'s layers after ``path``, forward and backward: a full forward with the gene's output as a
    leaf that needs gradient (as the mix is), and the backward to that leaf, minus the forward up to the gene (with
    gradients before it when ``grad_before``, as in the full pass: the child's own layers train; the frozen parent's do
    not)."""
    module = model.get_submodule(path)

    def leaf(_m, _i, out):
        first = out if isinstance(out, torch.Tensor) else out[0]
        return first.detach().requires_grad_()

    def full() -> None:
        h = module.register_forward_hook(leaf)
        try:
            out = model(x)
        finally:
            h.remove()
        (out if isinstance(out, torch.Tensor) else out[0]).float().square().mean().backward()

    def stop(_m, _i, out):
        raise _Stop(out)

    def upto() -> None:
        h = module.register_forward_hook(stop)
        try:
            with torch.set_grad_enabled(grad_before):
                model(x)
        except _Stop:
            pass  # the forward up to the gene is what was timed
        finally:
            h.remove()

    return max(0.0, median_step(full, steps, warmup=2) - median_step(upto, steps, warmup=2))


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
    ap.add_argument("--batch", type=int, default=128, help="CIFAR pairs (32 px)")
    ap.add_argument("--edge-batch", type=int, default=64, help="the edge children's pairs")
    ap.add_argument("--edge-size", type=int, default=128, help="the edge children's input side")
    ap.add_argument("--out", default="benchmarks/results/step_cost")
    ap.add_argument("--one", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        pair, label, batch, size = args.one
        print(json.dumps(measure(pair, label, args.steps, int(batch), int(size))))
        return
    shape = {pair: (args.edge_batch, args.edge_size) if pair in EDGE_PAIRS else (args.batch, 32) for pair in ALL_PAIRS}
    rows = []
    for pair in ALL_PAIRS:
        for label in rows_of(pair):
            batch, size = shape[pair]
            rows.append(measure_apart(pair, label, batch, size, args.steps))
            print(rows[-1], flush=True)
    for r in rows:
        kd = next(k for k in rows if k["pair"] == r["pair"] and k["method"] == "kd")
        r["time_vs_kd"] = r["median_step_s"] / kd["median_step_s"]
        r["memory_vs_kd"] = r["peak_rss_growth_mb"] / kd["peak_rss_growth_mb"]
        if "child_after_gene_s" in r:
            r["floor_vs_kd"] = (kd["median_step_s"] + r["child_after_gene_s"] + r["parent_after_gene_s"]) / kd["median_step_s"]
            r["floor_and_mixes_vs_kd"] = r["floor_vs_kd"] + r["mixes_s"] / kd["median_step_s"]
    latency = inference_latency(args.batch)
    record = {
        "command": f"python benchmarks/step_cost.py --steps {args.steps} --batch {args.batch} --edge-batch {args.edge_batch} "
        f"--edge-size {args.edge_size}",
        "setup": f"CIFAR pairs: batch {args.batch}, 3x32x32; edge pairs: batch {args.edge_batch}, 3x{args.edge_size}x{args.edge_size}; "
        "CPU, channels_last, optimiser step included (SGD; AdamW for ViT children)",
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
    for pair in ALL_PAIRS:
        batch, size = shape[pair]
        edge = pair in EDGE_PAIRS
        lines += [
            "",
            f"{pair} (batch {batch}, {size} px):",
            "",
            "| method | engine | median step (s) | time vs kd |"
            + (" floor vs kd | floor + mixes vs kd |" if edge else "")
            + " peak RSS growth (MB) | memory vs kd |",
            "|---|---|---|---|" + ("---|---|" if edge else "") + "---|---|",
        ]
        for r in (r for r in rows if r["pair"] == pair):
            floor = " – | – |" if "floor_vs_kd" not in r else f" {r['floor_vs_kd']:.2f}x | {r['floor_and_mixes_vs_kd']:.2f}x |"
            floor = floor if edge else ""
            lines.append(
                f"| {r['method']} | {r['engine'] if r['method'].startswith('hkt') else '–'} | {r['median_step_s']:.3f} | "
                f"{r['time_vs_kd']:.2f}x |{floor} {r['peak_rss_growth_mb']:.0f} | {r['memory_vs_kd']:.2f}x |"
            )
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
