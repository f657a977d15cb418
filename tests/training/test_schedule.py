"""Learning-rate schedules step per optimiser step: a one-epoch run anneals, and a resumed run's lr sequence is
the uninterrupted one."""

import math

import pytest

from hkt.config import load_config
from hkt.training.history import History
from hkt.training.run import fit
from hkt.training.schedule import lr_factor


def test_factors_by_hand():
    cos = lr_factor("cosine", 11, min_factor=0.1)
    assert cos(0) == 1.0 and cos(10) == pytest.approx(0.1) and cos(5) == pytest.approx(0.55)
    warm = lr_factor("cosine", 10, warmup=0.2)
    assert [warm(0), warm(1), warm(2)] == [0.5, 1.0, 1.0] and warm(9) == pytest.approx(0.0)
    step = lr_factor("step", 8, milestones=(0.5, 0.75))
    assert [step(i) for i in range(8)] == pytest.approx([1, 1, 1, 1, 0.1, 0.1, 0.01, 0.01])
    one = lr_factor("onecycle", 100)
    assert one(0) == pytest.approx(1 / 25 + (1 - 1 / 25) / 5) and one(4) == 1.0 and one(99) == pytest.approx(0.0)
    assert lr_factor("constant", 5)(4) == 1.0
    with pytest.raises(ValueError, match="optim.schedule must be one of"):
        lr_factor("linear", 5)


def _record_lrs(monkeypatch) -> list[tuple[int, float]]:
    seen: list[tuple[int, float]] = []

    def record(self, trainer, module, batch, batch_idx):  # the lr the coming step uses
        seen.append((trainer.global_step, trainer.optimizers[0].param_groups[0]["lr"]))

    monkeypatch.setattr(History, "on_train_batch_start", record)
    return seen


def test_one_epoch_cosine_anneals_to_min_lr_per_step(tiny_fashion, monkeypatch):
    seen = _record_lrs(monkeypatch)
    fit(load_config(None, tiny_fashion + ["optim.lr=0.05", "optim.min_lr=0.001"]))
    lrs = [lr for _, lr in seen]
    assert len(lrs) == 8 and lrs[0] == pytest.approx(0.05) and lrs[-1] == pytest.approx(0.001)
    assert lrs == sorted(lrs, reverse=True)
    assert lrs[3] == pytest.approx(0.001 + 0.049 * 0.5 * (1 + math.cos(math.pi * 3 / 7)))


def test_resumed_lr_sequence_equals_the_uninterrupted_one(tiny_fashion, tmp_path, monkeypatch):
    seen = _record_lrs(monkeypatch)
    extra = ["trainer.max_epochs=3", "optim.warmup=0.2"]
    fit(load_config(None, tiny_fashion[:-1] + extra + [f"out_dir={tmp_path / 'straight'}"]))
    straight, seen[:] = list(seen), []

    def crash(self, trainer, module):
        if trainer.current_epoch == 2:
            raise KeyboardInterrupt

    cfg = load_config(None, tiny_fashion[:-1] + extra + [f"out_dir={tmp_path / 'resumed'}"])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(History, "on_train_epoch_start", crash, raising=False)
        with pytest.raises((KeyboardInterrupt, SystemExit)):
            fit(cfg)
    fit(cfg, resume=True)
    assert len(straight) == 24 and seen == straight
