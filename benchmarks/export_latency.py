"""Inference latency of the exported child on this CPU: PyTorch eager, the ``torch.export`` program (.pt2) and
onnxruntime, next to a freshly built plain child of the same architecture, at batch 1 and 128.

    python benchmarks/export_latency.py [--reps 30] [--out benchmarks/results/export_latency]

The child is a ResNet-20 trained by HKT (one pooled gene, ResNet-56 parent; a few steps suffice: latency does
not depend on the weights' values), exported with ``hkt.export``. Medians over ``--reps`` timed calls after a
warm-up, all four runtimes timed in one process, interleaved in rounds so that machine drift is shared.
Writes ``<out>.json`` and ``<out>.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
from pathlib import Path

import torch

from _timing import median_step


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/export_latency")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import onnxruntime as ort

    from hkt.export import export
    from hkt.methods import build_method
    from hkt.models import build_model

    torch.manual_seed(0)
    x = torch.randn(128, 3, 32, 32)
    method = build_method("hkt", build_model("resnet20"), build_model("resnet56"), x[:2], genes=["avgpool"])
    opt = torch.optim.SGD(method.learnable_parameters(), lr=0.01)
    method.train()
    for _ in range(3):
        _, losses = method.forward_train(x[:32], torch.randint(0, 10, (32,)))
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
    folder = Path(tempfile.mkdtemp())
    report = export(method, build_model("resnet20"), x[:16], folder)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    session = ort.InferenceSession(str(folder / "child.onnx"), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    runtimes = {
        "plain ResNet-20, eager (fresh, never trained)": build_model("resnet20").eval(),
        "exported child, eager": method.export_child(),
        "exported child, torch.export .pt2": torch.export.load(str(folder / "child.pt2")).module(),
    }
    rows = []
    for batch in (1, 128):
        xb = x[:batch]
        times: dict[str, list[float]] = {k: [] for k in [*runtimes, "exported child, onnxruntime"]}
        for _ in range(3):  # rounds, interleaved
            for label, model in runtimes.items():
                with torch.inference_mode():
                    times[label].append(median_step(lambda m=model: m(xb), args.reps, warmup=3))
            arr = xb.numpy()
            times["exported child, onnxruntime"].append(median_step(lambda: session.run(None, {name: arr}), args.reps, warmup=3))
        plain = statistics.median(times["plain ResNet-20, eager (fresh, never trained)"])
        for label, t in times.items():
            rows.append(
                {"batch": batch, "runtime": label, "median_s": statistics.median(t), "vs_plain_eager": statistics.median(t) / plain}
            )
    result = {
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "threads": args.threads,
            "torch": torch.__version__,
            "onnxruntime": ort.__version__,
        },
        "reps": args.reps,
        "export_parity": {f: r.get("max_abs_diff") for f, r in report["formats"].items()},
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        f"Exported HKT child (ResNet-20) inference latency, CPU ({args.threads} threads), median of {args.reps} calls x 3 rounds.",
        f"Command: `python benchmarks/export_latency.py --reps {args.reps} --threads {args.threads}`. Export parity (max |diff|): "
        + ", ".join(f"{f} {d:.2g}" for f, d in result["export_parity"].items() if d is not None)
        + ".",
        "",
        "| batch | runtime | median (ms) | vs plain eager |",
        "|---|---|---|---|",
        *[f"| {r['batch']} | {r['runtime']} | {1000 * r['median_s']:.2f} | {r['vs_plain_eager']:.2f}x |" for r in rows],
    ]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
