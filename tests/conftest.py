"""Shared fixtures. Data and weights come from the offline mirror in ../shared (see README), pointed to by
HKT_DATA_DIR / HKT_WEIGHTS_DIR; the decoded-array cache lives in HKT_CACHE_DIR."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared"
os.environ.setdefault("HKT_DATA_DIR", str(SHARED / "data"))
os.environ.setdefault("HKT_WEIGHTS_DIR", str(SHARED / "weights"))
os.environ.setdefault("HKT_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".cache"))
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def tiny_fashion(tmp_path: Path) -> list[str]:
    """Overrides for a seconds-long run on a real Fashion-MNIST slice."""
    return [
        "data.name=fashion_mnist",
        "data.train_subset=512",
        "data.val_size=256",
        "data.test_subset=256",
        "data.batch_size=64",
        "data.num_workers=0",
        "child.arch=resnet8",
        "child.width=4",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        f"out_dir={tmp_path / 'run'}",
    ]
