"""Trustworthy runs, tried as a new user would: a different data root, corrupt labels, numbers in YAML, divergence
and recovery, two processes on one run, kill -9, bad files, unwritable folders. Each test fails without its fix."""

import gzip
import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from hkt.cli import main
from hkt.config import load_config
from hkt.data import sources
from hkt.io import RunLock, RunLockedError
from hkt.methods import CE
from hkt.training.module import NonFiniteLossError
from hkt.training.run import build, fit

HKT = str(Path(sys.executable).with_name("hkt"))


def write_idx(path: Path, array: np.ndarray) -> None:
    """The idx(.gz) format of MNIST / Fashion-MNIST: magic (0, 0, 0x08 = ubyte, ndim), big-endian dims, data."""
    header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def fashion_folder(
    folder: Path, n_train: int, n_test: int, train_labels: np.ndarray | None = None, test_labels: np.ndarray | None = None
) -> Path:
    real = sources.fashion_mnist()
    folder.mkdir(parents=True)
    ty = real.train_y[:n_train] if train_labels is None else train_labels
    sy = real.test_y[:n_test] if test_labels is None else test_labels
    for name, array in zip(sources.FASHION_FILES, (real.train_x[:n_train, ..., 0], ty, real.test_x[:n_test, ..., 0], sy)):
        write_idx(folder / f"{name}.gz", np.asarray(array))
    return folder


def only_child_state(run: Path, which: str = "last") -> dict:
    state = torch.load(run / "checkpoints" / f"{which}.ckpt", weights_only=True)["state_dict"]
    return {k: v for k, v in state.items() if k.startswith("method.child.")}


# 1. the decoded-array cache is keyed by what the data is, not by the dataset's name


def test_another_data_root_is_never_served_from_a_stale_cache(tmp_path, tiny_fashion):
    default = build(load_config(None, tiny_fashion))[0].describe()  # fills the cache with the default copy
    folder = fashion_folder(tmp_path / "fm-small", 1000, 300)
    cfg = load_config(None, tiny_fashion + [f"data.root={folder}", "data.train_subset=null", "data.test_subset=null", "data.val_size=100"])
    described = build(cfg)[0].describe()
    assert described["sizes"] == {"train": 900, "val": 100, "test": 300}
    assert described["root"] == str(folder.resolve()) and described["fingerprint"] != default["fingerprint"]
    # the same root with a changed file is a new fingerprint too
    os.utime(folder / "t10k-labels-idx1-ubyte.gz", ns=(1, 1))
    assert sources.fashion_mnist(folder).fingerprint != described["fingerprint"]


# 2. labels are checked against the dataset's classes, never inferred from the largest label


def test_a_corrupt_training_label_fails_instead_of_adding_a_class(tmp_path, tiny_fashion):
    labels = sources.fashion_mnist().train_y[:1000].copy()
    labels[17] = 200
    folder = fashion_folder(tmp_path / "fm-bad", 1000, 300, train_labels=labels)
    cfg = load_config(None, tiny_fashion + [f"data.root={folder}", "data.train_subset=null", "data.test_subset=null", "data.val_size=100"])
    with pytest.raises(ValueError, match=r"training labels .* outside the 10 classes .*values \[200\].*data\.num_classes"):
        build(cfg)


def test_test_labels_outside_the_classes_fail_in_the_python_api_too(tmp_path):
    from hkt.data.datamodule import ImageClassificationData

    labels = sources.fashion_mnist().test_y[:300].copy()
    labels[:3] = 10
    folder = fashion_folder(tmp_path / "fm-test", 1000, 300, test_labels=labels)
    data = ImageClassificationData("fashion_mnist", root=str(folder), val_size=100, num_workers=0)
    with pytest.raises(ValueError, match=r"test labels .*3 label\(s\), values \[10\]"):
        data.setup()


def test_image_folder_splits_must_have_the_same_classes(tmp_path):
    from PIL import Image

    for split, classes in (("train", ("a", "b")), ("test", ("a", "b", "c"))):
        for c in classes:
            (tmp_path / "tree" / split / c).mkdir(parents=True)
            Image.new("RGB", (4, 4)).save(tmp_path / "tree" / split / c / "0.png")
    with pytest.raises(ValueError, match=r"different classes \(only in train: \[\]; only in test: \['c'\]\)"):
        sources.cifar10(tmp_path / "tree")


# 3. numbers in YAML and overrides


# 4. NaN recovery


def test_divergence_then_resume_with_a_lower_lr_finishes_with_finite_weights(tiny_fashion, caplog):
    fit(load_config(None, tiny_fashion + ["trainer.max_epochs=1", "optim.lr=0.05"]))
    run = Path(tiny_fashion[-1].split("=", 1)[1])
    good = only_child_state(run)
    with pytest.raises(NonFiniteLossError, match=r"last good checkpoint \(end of epoch \d+\) is kept"):
        fit(load_config(None, tiny_fashion + ["trainer.max_epochs=3", "optim.lr=1e8"]), resume=True)
    kept = only_child_state(run)
    assert all(torch.equal(good[k], kept[k]) for k in good), "a non-finite step reached the checkpoint"
    with caplog.at_level("INFO"):
        rec = fit(load_config(None, tiny_fashion + ["trainer.max_epochs=3", "optim.lr=0.01"]), resume=True)
    assert "resuming with changed optimiser settings (lr 0.05 -> 0.01)" in caplog.text
    assert [e["epoch"] for e in rec["epochs"]] == [0, 1, 2]
    assert abs(rec["epochs"][1]["train/lr"] - 0.01 * 0.5 * (1 + np.cos(np.pi * 12 / 23))) < 2e-3  # the new lr's curve
    assert all(torch.isfinite(v.float()).all() for v in only_child_state(run).values())


def test_a_non_finite_buffer_with_a_finite_loss_never_reaches_a_checkpoint(tiny_fashion, monkeypatch):
    fit(load_config(None, tiny_fashion + ["trainer.max_epochs=1"]))
    run = Path(tiny_fashion[-1].split("=", 1)[1])
    original, calls = CE.forward_train, []

    def overflowing(self, x, y):  # the loss stays finite; a BatchNorm running variance overflows
        calls.append(1)
        if len(calls) == 3:
            self.child.bn1.running_var.fill_(float("inf"))
        return original(self, x, y)

    monkeypatch.setattr(CE, "forward_train", overflowing)
    with pytest.raises(NonFiniteLossError, match=r"non-finite weights .*child\.bn1\.running_var"):
        fit(load_config(None, tiny_fashion + ["trainer.max_epochs=2"]), resume=True)
    assert all(torch.isfinite(v.float()).all() for v in only_child_state(run).values())


# 5. one writer per run; 6. logs survive a kill -9 and a resume


def test_a_second_process_on_the_same_out_dir_is_refused(tiny_fashion, tmp_path):
    out = Path(tiny_fashion[-1].split("=", 1)[1])
    slow = tiny_fashion + ["trainer.max_epochs=30"]  # long enough to outlive the second process's start-up
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two processes on two cores: no oversubscription
    first = subprocess.Popen([HKT, "fit", *slow], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 1200  # only a guard against a hang: the lock appears within seconds
    while not (out / ".hkt.lock").exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    second = subprocess.run([HKT, "fit", *slow], capture_output=True, text=True, timeout=1800, env=env)
    assert second.returncode == 2 and "Traceback" not in second.stderr
    assert f"is in use by process {first.pid}" in second.stderr
    assert first.wait(timeout=1800) == 0, first.stderr.read()[-2000:]
    assert _csv_epochs(out / "logs" / "metrics.csv") == set(range(30))
    assert not (out / ".hkt.lock").exists()


def _csv_epochs(path: Path) -> set[int]:
    import csv

    with open(path, newline="") as f:
        return {int(float(r["epoch"])) for r in csv.DictReader(f) if r.get("val/acc")}


def test_a_stale_lock_from_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    (tmp_path / ".hkt.lock").write_text(json.dumps({"pid": int(dead), "host": __import__("socket").gethostname()}))
    with RunLock(tmp_path):
        with pytest.raises(RunLockedError, match=f"in use by process {os.getpid()}"):
            RunLock(tmp_path).acquire()
    assert not (tmp_path / ".hkt.lock").exists()


def test_kill_9_then_resume_keeps_every_csv_row_and_is_exact(tiny_fashion, tmp_path):
    out = Path(tiny_fashion[-1].split("=", 1)[1])
    run = [*tiny_fashion, "trainer.max_epochs=4"]
    # the same thread count as this process, which resumes the run: CPU kernels split sums by thread
    # killed by itself at the start of epoch 3 (HKT_KILL_AT): deterministic, however slow the machine
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads()), "HKT_KILL_AT": "epoch_start@3"}
    proc = subprocess.run([HKT, "fit", *run], capture_output=True, env=env, timeout=1800)
    assert proc.returncode == -signal.SIGKILL and not (out / "result.json").exists()
    assert main(["fit", "--resume", *run]) == 0
    kept = sorted((out / "logs").glob("metrics*.csv"))
    assert len(kept) == 2, kept  # the killed run's log, rotated, and the resumed one
    assert set().union(*(_csv_epochs(p) for p in kept)) == {0, 1, 2, 3}
    straight = [*tiny_fashion[:-1], f"out_dir={tmp_path / 'straight'}", "trainer.max_epochs=4"]
    fit(load_config(None, straight))
    a, b = only_child_state(out), only_child_state(tmp_path / "straight")
    assert all(torch.equal(a[k], b[k]) for k in a), "kill -9 + resume is not bit-identical"


# 7. errors a person can read


def _one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) <= 2, err
    return err


def test_bad_weights_files_are_named_in_one_line(tiny_fashion, tmp_path, capsys):
    flat = [part for o in tiny_fashion for part in ("--" + o.split("=", 1)[0], o.split("=", 1)[1])]
    torch.save({"conv1.weight": torch.zeros(4, 1, 3, 3)}, tmp_path / "good.pt")
    whole = (tmp_path / "good.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "empty.pt").write_bytes(b"")
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"state_dict": {}, "x": Evil()}, tmp_path / "evil.pt")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(100)}, str(tmp_path / "t.safetensors"))
    (tmp_path / "t.safetensors").write_bytes((tmp_path / "t.safetensors").read_bytes()[:40])
    for name, pattern in [
        ("truncated.pt", "truncated or not a PyTorch file"),
        ("empty.pt", "is empty"),
        ("evil.pt", "refuses to unpickle"),
        ("t.safetensors", "not a valid safetensors file"),
    ]:
        err = _one_line_error(capsys, ["fit", *flat, "--child.weights", str(tmp_path / name)])
        assert str(tmp_path / name) in err and pattern in err and "weights_only=False" not in err, err
    assert not marker.exists()


def test_unwritable_out_dir_non_finite_loss_and_foreign_checkpoints(tiny_fashion, tmp_path, capsys, monkeypatch):
    flat = [part for o in tiny_fashion[:-1] for part in ("--" + o.split("=", 1)[0], o.split("=", 1)[1])]
    if os.geteuid() == 0:  # root writes through permission bits: use a folder the kernel refuses
        locked = Path("/sys/hkt-test-run")
    else:
        (tmp_path / "ro").mkdir(mode=0o500)
        locked = tmp_path / "ro" / "run"
    err = _one_line_error(capsys, ["fit", *flat, "--out_dir", str(locked)])
    assert "cannot access /" in err and "choose another out_dir" in err

    # a non-ASCII out_dir works; a kd checkpoint is refused by hkt test under the ce config, naming both
    unicode = tmp_path / "rün-ü"
    assert main(["fit", *flat, "--out_dir", str(unicode), "--parent.arch", "resnet8", "--method", "{name: kd}"]) == 0
    capsys.readouterr()
    err = _one_line_error(capsys, ["test", *flat, "--out_dir", str(unicode)])
    assert "method: checkpoint 'kd', config 'ce'" in err

    # a truncated last.ckpt: the resume fails by name and changes nothing in out_dir
    last = unicode / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])
    (unicode / "result.json").unlink()
    before = {p: p.stat().st_mtime_ns for p in unicode.rglob("*")}
    err = _one_line_error(
        capsys, ["fit", "--resume", *flat, "--out_dir", str(unicode), "--parent.arch", "resnet8", "--method", "{name: kd}"]
    )
    assert str(last) in err and "truncated" in err
    assert {p: p.stat().st_mtime_ns for p in unicode.rglob("*")} == before

    def nan(self, x, y):
        out, losses = original(self, x, y)
        return out, {k: v * float("nan") for k, v in losses.items()}

    original = CE.forward_train
    monkeypatch.setattr(CE, "forward_train", nan)
    err = _one_line_error(capsys, ["fit", *flat, "--out_dir", str(tmp_path / "nan")])
    assert "non-finite training loss" in err and "start again with a lower learning rate" in err
