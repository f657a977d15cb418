"""GPU training throughput and peak memory per method, and the exported child's inference latency. Prepared to run
once whenever a GPU is lent; ``--smoke`` runs the same code in seconds on the CPU.

    python benchmarks/gpu_step.py [--out benchmarks/results/gpu_step]        # on a CUDA machine, < 8 minutes
    python benchmarks/gpu_step.py --smoke --out /tmp/gpu_step_smoke          # CPU check of the script itself

ResNet-56 parent -> ResNet-20 child, CIFAR-sized random tensors made on the device (speed does not depend on pixel
values). For ce, kd, hkt (pooled gene, reference) and hkt (genes after each stage), at batch 256 and 512: img/s
(median over timed steps, SGD step included, synchronised) and peak GPU memory, for fp32 vs bf16 autocast and
channels_last off/on; ``torch.compile`` on/off for the methods it applies to (ce, kd: hkt's per-step hooks rule
it out, see ``hkt.training.fast_path``), at batch 256 with channels_last. Then the exported child's latency
(eager, .pt2, onnxruntime CUDA/CPU provider) at batch 1 and 256. Writes ``<out>.json`` and ``<out>.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch

METHODS = {
    "ce": {"name": "ce"},
    "kd": {"name": "kd"},
    "hkt (pooled gene)": {"name": "hkt", "genes": ["avgpool"]},
    "hkt (stage genes)": {"name": "hkt", "genes": ["layer1", "layer2", "layer3"]},
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def train_throughput(label: str, batch: int, bf16: bool, channels_last: bool, compile_: bool, steps: int, device: torch.device) -> dict:
    from hkt.methods import build_method
    from hkt.models import build_model

    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(batch, 3, 32, 32, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch,), device=device)
    options = dict(METHODS[label])
    name = options.pop("name")
    parent = None if name == "ce" else build_model("resnet56").to(device).eval()
    method = build_method(name, build_model("resnet20").to(device), parent, x[:2], **options).to(device).train()
    method.to(memory_format=fmt)
    if compile_:
        method.child.compile()
        if parent is not None:
            parent.compile()
    opt = torch.optim.SGD(method.learnable_parameters(), lr=0.01, momentum=0.9)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()

    def step() -> None:
        with autocast:
            _, losses = method.forward_train(x, y)
            loss = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3 if not compile_ else 5):
        step()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    median = statistics.median(times)
    return {
        "method": label,
        "batch": batch,
        "precision": "bf16" if bf16 else "fp32",
        "channels_last": channels_last,
        "compile": compile_,
        "img_per_s": batch / median,
        "median_step_s": median,
        "peak_mem_mb": peak,
    }


def export_latency(batches: list[int], reps: int, device: torch.device) -> list[dict]:
    from hkt.export import export
    from hkt.methods import build_method
    from hkt.models import build_model

    x = torch.randn(max(batches), 3, 32, 32)
    method = build_method("hkt", build_model("resnet20"), build_model("resnet56"), x[:2], genes=["avgpool"])
    folder = Path(tempfile.mkdtemp())
    export(method, build_model("resnet20"), x[:16], folder)
    import onnxruntime as ort

    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device.type == "cuda" else ["CPUExecutionProvider"]
    session = ort.InferenceSession(str(folder / "child.onnx"), providers=providers)
    runtimes = {"eager": method.export_child().to(device), ".pt2": torch.export.load(str(folder / "child.pt2")).module().to(device)}
    rows = []
    for b in batches:
        xb = x[:b].to(device)
        for label, model in runtimes.items():
            with torch.inference_mode():
                for _ in range(3):
                    model(xb)
                sync(device)
                t = []
                for _ in range(reps):
                    start = time.perf_counter()
                    model(xb)
                    sync(device)
                    t.append(time.perf_counter() - start)
            rows.append({"runtime": label, "batch": b, "median_ms": 1000 * statistics.median(t)})
        arr = x[:b].numpy()
        name = session.get_inputs()[0].name
        for _ in range(3):
            session.run(None, {name: arr})
        t = []
        for _ in range(reps):
            start = time.perf_counter()
            session.run(None, {name: arr})
            t.append(time.perf_counter() - start)
        rows.append({"runtime": f"onnxruntime ({session.get_providers()[0]})", "batch": b, "median_ms": 1000 * statistics.median(t)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke", action="store_true", help="tiny batches, 2 steps, on the CPU: checks the script in seconds")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", default="benchmarks/results/gpu_step")
    args = parser.parse_args()
    device = torch.device("cpu" if args.smoke or not torch.cuda.is_available() else "cuda")
    if device.type == "cpu" and not args.smoke:
        raise SystemExit("gpu_step.py: no CUDA device here; run it on a GPU machine, or pass --smoke to check the script on the CPU")
    batches, steps = ([8], 2) if args.smoke else ([256, 512], args.steps)
    rows = []
    for label in METHODS:
        for batch in batches:
            for bf16 in (False, True):
                for cl in (False, True):
                    rows.append(train_throughput(label, batch, bf16, cl, False, steps, device))
                    print(rows[-1], flush=True)
        if METHODS[label]["name"] in ("ce", "kd") and not args.smoke:  # compile: ce and kd only (hooks rule out hkt)
            for bf16 in (False, True):
                rows.append(train_throughput(label, batches[0], bf16, True, True, steps, device))
                print(rows[-1], flush=True)
    latency = export_latency([1, 8] if args.smoke else [1, 256], 3 if args.smoke else 50, device)
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({platform.processor() or platform.machine()}), smoke run"
    result = {"device": name, "torch": torch.__version__, "smoke": args.smoke, "train": rows, "export_latency": latency}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    kd = {(r["batch"], r["precision"], r["channels_last"], r["compile"]): r["img_per_s"] for r in rows if r["method"] == "kd"}

    def row(r: dict) -> str:
        ref = kd.get((r["batch"], r["precision"], r["channels_last"], r["compile"]))
        memory = "–" if r["peak_mem_mb"] is None else f"{r['peak_mem_mb']:.0f}"
        ratio = f"{r['img_per_s'] / ref:.2f}x" if ref else "–"
        cells = [r["method"], r["batch"], r["precision"], r["channels_last"], r["compile"], f"{r['img_per_s']:,.0f}", ratio, memory]
        return "| " + " | ".join(str(c) for c in cells) + " |"

    lines = [
        f"Training throughput on {name}, torch {torch.__version__} (`python benchmarks/gpu_step.py{' --smoke' if args.smoke else ''}`).",
        "",
        "| method | batch | precision | channels_last | compile | img/s | vs kd | peak memory (MB) |",
        "|---|---|---|---|---|---|---|---|",
        *[row(r) for r in rows],
        "",
        "Exported child (ResNet-20) inference latency:",
        "",
        "| runtime | batch | median (ms) |",
        "|---|---|---|",
        *[f"| {r['runtime']} | {r['batch']} | {r['median_ms']:.3f} |" for r in latency],
    ]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
