"""What the command line says: hkt's own lines and no Lightning banners (unless --verbose), exact divergence
advice, one continuous metrics.csv after a resume, and `hkt genes` for choosing what to pair."""

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hkt.cli import main
from hkt.config import load_config
from hkt.methods import CE
from hkt.training.module import NonFiniteLossError
from hkt.training.run import fit

HKT = str(Path(sys.executable).with_name("hkt"))
SUPPRESSED = (
    "GPU available:",
    "TPU available:",
    "💡 Tip",
    "Loading `train_dataloader` to estimate",
    "LeafSpec",
    "is smaller than the logging interval",
    "Total FLOPs",
    "module(s) in eval mode",
)


def run_cli(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "default"}  # warnings as a user's shell shows them (pytest filters its own)
    return subprocess.run([HKT, *args], capture_output=True, text=True, timeout=1800, env=env)


def test_fit_prints_hkt_lines_and_none_of_lightnings_banners_unless_verbose(tiny_fashion, tmp_path):
    run = [a for a in tiny_fashion if not a.startswith(("out_dir", "trainer.enable"))] + ["trainer.max_epochs=2"]
    quiet = run_cli(["fit", *run, f"out_dir={tmp_path / 'quiet'}", "parent.arch=resnet8", "method={name: kd}"])
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    said = quiet.stdout + quiet.stderr
    assert not [m for m in SUPPRESSED if m in said], [m for m in SUPPRESSED if m in said]
    lines = [line for line in quiet.stderr.splitlines() if line.startswith("[hkt]")]
    assert lines[0].startswith(f"[hkt] fit {tmp_path / 'quiet'}: classification, parent resnet8 -> child resnet8, method kd")
    assert "trainable parameters" in lines[0]
    assert [line[:15] for line in lines[1:3]] == ["[hkt] epoch 1/2", "[hkt] epoch 2/2"]
    assert "train loss" in lines[1] and "(task" in lines[1] and "kd " in lines[1] and "val acc" in lines[1]
    assert lines[3].startswith("[hkt] done in ") and "best epoch" in lines[3] and "result.json" in lines[3]
    assert "{" not in quiet.stdout  # the progress bar only: the record is printed with --json
    loud = run_cli(["fit", *run, f"out_dir={tmp_path / 'loud'}", "parent.arch=resnet8", "method={name: kd}", "--verbose", "--json"])
    assert loud.returncode == 0, loud.stderr[-2000:]
    assert all(m in loud.stdout + loud.stderr for m in ("GPU available:", "Loading `train_dataloader` to estimate", "Total FLOPs"))
    record = json.loads(re.search(r"^\{\n.*^\}", loud.stdout, flags=re.S | re.M).group(0))  # after the progress bar
    assert set(record) >= {"best_epoch", "val_acc_best", "test_acc"}


def test_the_readme_excerpt_is_what_hkt_fit_prints(tiny_fashion, tmp_path):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    excerpt = re.search(r"<!-- cli-excerpt -->\n```text\n(.*?)```", readme, flags=re.S).group(1).splitlines()
    run = [a for a in tiny_fashion if not a.startswith("out_dir")] + ["trainer.max_epochs=2", "trainer.enable_progress_bar=false"]
    out = tmp_path / "tiny"
    said = run_cli(["fit", *run, f"out_dir={out}", "parent.arch=resnet8", "method={name: kd}"])
    lines = [line for line in said.stderr.splitlines() if line.startswith("[hkt]")]

    def pattern(line: str) -> str:  # numbers and the run directory may differ; every word must not
        text = re.escape(line.replace("runs/tiny", "RUN"))
        return "^" + re.sub(r"\d[\d,]*(\\\.\d+)?(e-?\d+)?", r"[\\d.,e-]+", text).replace("RUN", re.escape(str(out))) + "$"

    assert len(lines) == len(excerpt), lines
    for line, want in zip(lines, excerpt):
        assert re.match(pattern(want), line), (want, line)


def _diverge_after(monkeypatch, steps: int) -> None:
    original, calls = CE.forward_train, []

    def diverging(self, x, y):
        out, losses = original(self, x, y)
        calls.append(1)
        return out, {k: v * (float("nan") if len(calls) > steps else 1.0) for k, v in losses.items()}

    monkeypatch.setattr(CE, "forward_train", diverging)


def test_divergence_before_any_checkpoint_says_to_start_again(tiny_fashion, monkeypatch):
    _diverge_after(monkeypatch, 2)
    with pytest.raises(
        NonFiniteLossError,
        match=r"in epoch 1 \(step 2\): the loss \(task=nan\)\. No epoch had finished.*start again"
        r".*optim\.lr=0\.001 \(without --resume\)",
    ) as e:
        fit(load_config(None, tiny_fashion + ["trainer.max_epochs=2"]))
    assert "resume from" not in str(e.value)


def test_divergence_after_an_epoch_says_to_resume_from_the_next_one(tiny_fashion, monkeypatch):
    _diverge_after(monkeypatch, 12)  # 8 steps per epoch
    with pytest.raises(
        NonFiniteLossError,
        match=r"in epoch 2 \(step 12\): the loss.*checkpoint \(end of epoch 1\) is kept: resume "
        r"from epoch 2 .*--resume optim\.lr=0\.001",
    ):
        fit(load_config(None, tiny_fashion + ["trainer.max_epochs=3"]))


def test_weights_too_large_for_their_norm_are_named(tiny_fashion, monkeypatch):
    original, calls = CE.forward_train, []

    def huge(self, x, y):  # every value finite, but the norm of bn1's running variance overflows float32
        calls.append(1)
        if len(calls) == 3:
            self.child.bn1.running_var.fill_(3e38)
        return original(self, x, y)

    monkeypatch.setattr(CE, "forward_train", huge)
    with pytest.raises(NonFiniteLossError, match=r"too large for float32.*child\.bn1\.running_var"):
        fit(load_config(None, tiny_fashion + ["trainer.max_epochs=1"]))


def _epoch_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return [{k: v for k, v in r.items() if v != ""} for r in csv.DictReader(f) if r.get("val/acc")]


def test_after_a_crash_and_resume_metrics_csv_holds_every_epoch_as_an_uninterrupted_run(tiny_fashion, tmp_path, monkeypatch):
    out = Path(tiny_fashion[-1].split("=", 1)[1])
    original, calls = CE.forward_train, []

    def crash(self, x, y):  # dies in the middle of epoch 2 (8 steps per epoch)
        calls.append(1)
        if len(calls) == 21:
            raise RuntimeError("the machine went away")
        return original(self, x, y)

    monkeypatch.setattr(CE, "forward_train", crash)
    with pytest.raises(RuntimeError, match="went away"):
        fit(load_config(None, tiny_fashion + ["trainer.max_epochs=4"]))
    monkeypatch.setattr(CE, "forward_train", original)
    fit(load_config(None, tiny_fashion + ["trainer.max_epochs=4"]), resume=True)
    straight = tmp_path / "straight"
    fit(load_config(None, [*tiny_fashion[:-1], f"out_dir={straight}", "trainer.max_epochs=4"]))
    resumed = _epoch_rows(out / "logs" / "metrics.csv")
    assert [int(r["epoch"]) for r in resumed] == [0, 1, 2, 3]
    assert resumed == _epoch_rows(straight / "logs" / "metrics.csv")
    assert sorted(p.name for p in (out / "logs").glob("metrics*.csv")) == ["metrics.1.csv", "metrics.csv"]  # the backup kept
    assert [int(r["epoch"]) for r in _epoch_rows(out / "logs" / "metrics.1.csv")] == [0, 1]


def test_genes_lists_kinds_and_proposes_stage_pairs_for_cifar_resnets(capsys):
    assert main(["genes", "--parent", "resnet56", "--child", "resnet20", "--format", "yaml"]) == 0
    assert capsys.readouterr().out.strip() == (
        "genes:\n  - {parent: layer1, child: layer1}\n  - {parent: layer2, child: layer2}\n"
        "  - {parent: layer3, child: layer3}\n  - {parent: avgpool, child: avgpool}"
    )


def test_genes_pairs_cnn_stages_with_vit_blocks_and_names_the_adapter(capsys):
    pytest.importorskip("timm")
    vit = "{img_size: 32, patch_size: 4, embed_dim: 96, depth: 4, num_heads: 3}"
    assert main(["genes", "--parent", "resnet56", "--child", "timm:vit_tiny_patch16_224", "--child-options", vit]) == 0
    out = capsys.readouterr().out
    assert re.search(r"\n  layer3 +map NCHW \(B, 64, 8, 8\)\n", out) and re.search(
        r"\n  blocks.3 +tokens \(B, 1\+8x8, 96\), 1 prefix\n", out
    )
    proposed = out.split("proposed genes (parent -> child: adapter):\n")[1].splitlines()
    pairs = [line.split(":")[0].strip() for line in proposed]
    assert pairs == ["layer1 -> blocks.0", "layer2 -> blocks.2", "layer3 -> blocks.3", "avgpool -> fc_norm"]
    assert "Linear(in_features=64, out_features=96, bias=True), prefix tokens native" in proposed[2]


def test_genes_names_the_module_where_a_dry_run_failed_and_close_architecture_names(capsys):
    pytest.importorskip("timm")
    vit = "{img_size: 32, patch_size: 4, embed_dim: 96, depth: 4, num_heads: 3}"
    assert (
        main(["genes", "--parent", "resnet56", "--child", "timm:vit_tiny_patch16_224", "--child-options", vit, "--input", "3,64,64"]) == 2
    )
    assert "child (VisionTransformer) failed its dry run in module 'patch_embed' (PatchEmbed)" in capsys.readouterr().err
    assert main(["genes", "--parent", "renset56", "--child", "resnet20"]) == 2
    assert "unknown architecture 'renset56' (close names: resnet56" in capsys.readouterr().err


def test_hkt_methods_lists_every_method_and_prints_one_methods_options(capsys):
    assert main(["methods"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == ["ce", "kd", "dkd", "dist", "deit", "fitnet", "at", "reviewkd", "hkt"]
    assert main(["methods", "dkd"]) == 0
    out = capsys.readouterr().out
    assert "Decoupled Knowledge Distillation" in out and "Args:" in out and "  warmup_unit: 'epochs'" in out
    assert main(["methods", "dkdd"]) == 2 and "unknown method 'dkdd'" in capsys.readouterr().err
