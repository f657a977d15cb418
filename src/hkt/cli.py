"""``hkt`` command line: fit, test, export, demo, genes, compare, methods, report; one function per command."""

from __future__ import annotations

import argparse
import errno
import json
import pickle
import signal
import sys
from pathlib import Path

from hkt.config import load_config
from hkt.training.quiet import quiet, show_hkt_log


def _overrides(extra: list[str]) -> list[str]:
    """Accept both ``key=value`` and ``--key value``."""
    out, i = [], 0
    while i < len(extra):
        item = extra[i]
        if item.startswith("--") and "=" not in item:
            if i + 1 >= len(extra):
                raise SystemExit(f"hkt: override {item} has no value")
            out.append(f"{item[2:]}={extra[i + 1]}")
            i += 2
        else:
            out.append(item.removeprefix("--"))
            i += 1
    return out


_EXPECTED = (ValueError, KeyError, TypeError, OSError, RuntimeError, FloatingPointError, EOFError, pickle.UnpicklingError)


def explain(e: BaseException) -> str:
    """One or two lines for a person: what went wrong, with which file or key, and what to do."""
    if isinstance(e, OSError) and not isinstance(e, (FileNotFoundError, FileExistsError)) and e.errno is not None:
        where = e.filename or "a file"
        fix = {
            errno.EACCES: "make it writable or choose another out_dir",
            errno.EPERM: "make it writable or choose another out_dir",
            errno.EROFS: "the filesystem is read-only: choose another out_dir",
            errno.ENOSPC: "the disk is full: free space or choose another out_dir (files already written are intact)",
            errno.EDQUOT: "the disk quota is exceeded: free space or choose another out_dir",
        }.get(e.errno, "check the path and its permissions")
        return f"cannot access {where}: {e.strerror}; {fix}"
    text = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
    return str(text) or type(e).__name__


def _genes(args: argparse.Namespace, extra: list[str]) -> str:
    """``hkt genes``: the surveys of both networks and the proposed genes, as a table or a YAML ``genes:`` block."""
    import torch

    from hkt.config import load_yaml
    from hkt.core.transfer import build_adapter, describe_adapter
    from hkt.models import build_model
    from hkt.survey import propose, survey

    if args.config:
        from hkt.training.run import task_of

        cfg = load_config(args.config, _overrides(extra))
        task = task_of(cfg)
        data = task.data_for(cfg["data"])(**cfg["data"], train_seed=cfg["seed"])
        data.setup()
        example = data.example_input(2)
        nets = {role: task.build_net(cfg[role], data) for role in ("parent", "child") if cfg[role].get("arch")}
    else:
        if not (args.parent and args.child):
            raise ValueError("hkt genes needs -c CONFIG, or both --parent ARCH and --child ARCH")
        c, h, w = (int(v) for v in args.input.split(","))
        example = torch.randn(2, c, h, w)
        nets = {
            role: build_model(arch, args.classes, c, options=load_yaml(opts) or None)
            for role, arch, opts in (("parent", args.parent, args.parent_options), ("child", args.child, args.child_options))
        }
    if "parent" not in nets:
        raise ValueError("the config has no parent (parent.arch); hkt genes pairs a parent's blocks with a child's")
    from hkt.core.outputs import read_logits

    nets = {role: read_logits(net, role=role) for role, net in nets.items()}
    (p_blocks, p_out), (c_blocks, c_out) = survey(nets["parent"], example, "parent"), survey(nets["child"], example, "child")
    pairs = propose(p_blocks, c_blocks, p_out, c_out)
    if args.format == "yaml":
        return "genes:\n" + "".join(f"  - {{parent: {p.path}, child: {c.path}}}\n" for p, c in pairs).rstrip()
    lines = []
    for role, blocks in (("parent", p_blocks), ("child", c_blocks)):
        lines += [f"{role} ({type(nets[role]).__name__}): {len(blocks)} modules", ""]
        width = max(len(b.path) for b in blocks)
        lines += [f"  {b.path:<{width}}  {b.describe()}" for b in blocks] + [""]
    lines.append("proposed genes (parent -> child: adapter):")
    for p, c in pairs:
        lines.append(f"  {p.path} -> {c.path}: {describe_adapter(build_adapter(p.kind, c.kind, f'{p.path}:{c.path}'))}")
    return "\n".join(lines)


def _methods(name: str | None) -> str:
    """``hkt methods [NAME]``: every method with its reference, or one method's options with their defaults."""
    import inspect

    from hkt.methods import METHODS

    def reference(cls: type) -> str:
        return (inspect.getmodule(cls).__doc__ or "").strip().split("\n\n")[0]

    if name is None:
        width = max(map(len, METHODS))
        return "\n".join(f"{n:<{width}}  {' '.join(reference(c).split())[:150]}" for n, c in METHODS.items())
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    cls = METHODS[name]
    from hkt.methods import INTERNAL

    params = [p for p in inspect.signature(cls.__init__).parameters.values() if p.name not in INTERNAL]
    lines = [f"{name} ({cls.__module__}.{cls.__qualname__})", "", reference(cls), "", inspect.getdoc(cls) or "", "", "options (default):"]
    lines += [f"  {p.name}: {'(required)' if p.default is p.empty else repr(p.default)}" for p in params]
    return "\n".join(lines)


def _run_compare(args: argparse.Namespace, extra: list[str]) -> int:
    from hkt.compare.run import run_grid
    from hkt.compare.spec import load_grid
    from hkt.compare.summary import summarize

    if extra:
        raise ValueError(f"hkt compare takes no overrides ({extra}); edit the grid file")
    grid = load_grid(args.config)
    if not args.summarize:
        run_grid(grid, args.only)
    summarize(grid)
    print((Path(grid["out_dir"]) / "summary.md").read_text())
    return 0


def _run_report(args: argparse.Namespace, extra: list[str]) -> int:
    if args.report == "cost":
        from hkt.compare.cost import cost_report

        print(cost_report([Path(g) for g in args.grids], Path(args.out)), end="")
        return 0
    from hkt.compare.ladder import ladder

    panels = {}
    for spec in args.panels:
        title, sep, dirs = spec.partition("=")
        if not sep or not dirs:
            raise ValueError(f"{spec!r}: expected TITLE=DIR[,DIR...], e.g. fashion_mnist=benchmarks/results/evidence_v2_fashion_b1")
        panels[title] = dirs.split(",")
    ladder(panels, args.out, args.metric)
    print((Path(args.out) / "ladder.md").read_text(), end="")
    return 0


def _run_demo(args: argparse.Namespace, extra: list[str]) -> int:
    from hkt.demo import run_demo

    run_demo(args.out, args.epochs, args.train_subset, threads=args.threads)
    return 0


def _config(args: argparse.Namespace, extra: list[str]) -> dict:
    cfg = load_config(args.config, _overrides(extra))
    # Lightning's model summary (with its FLOPs column) unless asked for; hkt's start line gives the parameters
    cfg["trainer"].setdefault("enable_model_summary", bool(args.verbose))
    return cfg


def _run_fit(args: argparse.Namespace, extra: list[str]) -> int:
    from hkt.training.run import fit

    rec = fit(_config(args, extra), resume=args.resume)
    if args.json:
        shown = {k: v for k, v in rec.items() if k in ("best_epoch", "fit_wall_s") or k.startswith(("val_", "test_"))}
        print(json.dumps(shown, indent=1))
    return 0


def _run_test(args: argparse.Namespace, extra: list[str]) -> int:
    from hkt.training.run import test

    print(json.dumps(test(_config(args, extra), args.ckpt), indent=1))
    return 0


def _run_export(args: argparse.Namespace, extra: list[str]) -> int:
    from hkt.export import DEFAULT_FORMATS, export, failed_formats
    from hkt.training.run import load_trained, task_of

    cfg = _config(args, extra)
    data, module = load_trained(cfg, args.ckpt)
    fresh = task_of(cfg).build_net({**cfg["child"], "weights": None}, data)
    report = export(
        module.method,
        fresh,
        data.example_input(8),
        args.out or Path(cfg["out_dir"]) / "export",
        args.format or DEFAULT_FORMATS,
        spatial=cfg["task"]["name"] != "classification",
    )
    print(json.dumps(report, indent=1))
    for fmt, reason in failed_formats(report).items():
        print(f"hkt export: {fmt} not written ({reason}); the other formats were written and verified", file=sys.stderr)
    return 2 if args.format and failed_formats(report) else 0


def build_parser() -> argparse.ArgumentParser:
    """The ``hkt`` parser: one sub-command per ``COMMANDS`` entry."""
    parser = argparse.ArgumentParser(
        prog="hkt", description="Hereditary Knowledge Transfer: train a small child with genes inherited from a frozen parent."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_fit = sub.add_parser("fit", help="train (resumable), select on validation, test once")
    p_fit.add_argument("--resume", action="store_true", help="continue from out_dir/checkpoints/last.ckpt")
    p_fit.add_argument("--json", action="store_true", help="print the run's result as JSON (for scripts)")
    p_test = sub.add_parser("test", help="evaluate a trained child on the test split")
    p_exp = sub.add_parser("export", help="write the child alone (safetensors, ONNX, torch.export .pt2), each verified")
    p_exp.add_argument("--out", default=None, help="output folder (default: out_dir/export)")
    p_exp.add_argument("--format", nargs="+", default=None, metavar="FMT", help="any of safetensors onnx pt2; default: all three")
    for p in (p_fit, p_test, p_exp):
        p.add_argument("--config", "-c", help="YAML config (see configs/), or a finished run's folder (test, export)")
    for p in (p_test, p_exp):
        p.add_argument("--ckpt", default="best", help="best | last | a checkpoint path")
    p_demo = sub.add_parser("demo", help="offline Fashion-MNIST demo: parent, base, then ce / kd / hkt (minutes on a CPU)")
    p_demo.add_argument("--out", default="runs/demo")
    p_demo.add_argument("--epochs", type=int, default=4)
    p_demo.add_argument("--train-subset", type=int, default=15000)
    p_demo.add_argument("--threads", type=int, default=2, help="CPU threads (results are bit-reproducible at one thread count)")
    p_genes = sub.add_parser("genes", help="list every module's output kind and shape; propose genes to pair")
    p_genes.add_argument("--config", "-c", help="YAML config: its parent, child and data (the task's example input)")
    p_genes.add_argument("--parent", help="parent arch (instead of a config), e.g. resnet56, timm:resnet18")
    p_genes.add_argument("--child", help="child arch (instead of a config), e.g. resnet20, timm:vit_tiny_patch16_224")
    p_genes.add_argument("--parent-options", default="{}", help="YAML dict of the parent's options (timm / hf models)")
    p_genes.add_argument("--child-options", default="{}", help="YAML dict of the child's options (timm / hf models)")
    p_genes.add_argument("--input", default="3,32,32", help="C,H,W of the example input without a config (default 3,32,32)")
    p_genes.add_argument("--classes", type=int, default=10, help="number of classes without a config")
    p_genes.add_argument("--format", choices=("table", "yaml"), default="table", help="yaml: only a genes: block to paste")
    p_cmp = sub.add_parser("compare", help="methods x seeds at equal budget (resumable); summary with paired t-tests")
    p_cmp.add_argument("--config", "-c", required=True, help="grid YAML (see configs/compare_*.yaml)")
    p_cmp.add_argument("--only", nargs="+", help="run only these methods")
    p_cmp.add_argument(
        "--summarize-only",
        dest="summarize",
        action="store_true",
        help="train nothing: rebuild summary.md/json (and plots) from the committed records in out_dir",
    )
    p_met = sub.add_parser("methods", help="list the methods, or one method's options, defaults and reference")
    p_met.add_argument("name", nargs="?", help="a method name (e.g. dkd)")
    p_rep = sub.add_parser("report", help="reports across grids, rebuilt from their committed records")
    reports = p_rep.add_subparsers(dest="report", required=True)
    p_lad = reports.add_parser("ladder", help="test metric and paired differences vs ce per training budget")
    p_lad.add_argument("panels", nargs="+", metavar="TITLE=DIR,DIR", help="a panel title and its grids' out_dirs")
    p_lad.add_argument("--out", required=True, help="folder for ladder.md / ladder.json / ladder.png")
    p_lad.add_argument("--metric", default="test_acc")
    p_cost = reports.add_parser("cost", help="wall time of each step (prepare, tuning, final runs) per grid")
    p_cost.add_argument("grids", nargs="+", help="grid out_dirs (benchmarks/results/<grid>)")
    p_cost.add_argument("--out", required=True, help="folder for cost.md / cost.json")
    for p in (p_fit, p_test, p_exp, p_demo, p_cmp, p_genes, p_met, p_lad, p_cost):
        p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
        p.add_argument("--verbose", action="store_true", help="also show Lightning's banners, tips and model summary")
    return parser


COMMANDS = {
    "fit": _run_fit,
    "test": _run_test,
    "export": _run_export,
    "demo": _run_demo,
    "genes": lambda args, extra: print(_genes(args, extra)) or 0,
    "compare": _run_compare,
    "methods": lambda args, extra: print(_methods(args.name)) or 0,
    "report": _run_report,
}


def main(argv: list[str] | None = None) -> int:
    args, extra = build_parser().parse_known_args(argv)
    show_hkt_log()
    if not args.verbose:
        quiet()
    try:
        return COMMANDS[args.command](args, extra)
    except SystemExit as e:
        from lightning.pytorch.utilities.exceptions import SIGTERMException  # loaded already: Lightning raised it

        if not isinstance(e, SIGTERMException):
            raise
        # Lightning stops at the next step with SystemExit() (status 0): a driver would take the unfinished run for a
        # finished one. What the last checkpoint holds is kept; --resume continues from it.
        print(f"hkt {args.command}: stopped by SIGTERM before finishing; rerun with --resume to continue", file=sys.stderr)
        return 128 + signal.SIGTERM
    except _EXPECTED as e:
        if args.debug:
            raise
        print(f"hkt {args.command}{' ' + args.report if args.command == 'report' else ''}: error: {explain(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
