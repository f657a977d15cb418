"""A dataset that is not on disk fails before training and says how to get it."""

import pytest

from hkt.config import load_config
from hkt.data.sources import DatasetNotFoundError
from hkt.training.run import build


def test_missing_dataset_says_how_to_get_it(tmp_path):
    cfg = load_config(None, [f"data.root={tmp_path}"])
    with pytest.raises(DatasetNotFoundError, match=r"no CIFAR-10 under .*cifar-10-python\.tar\.gz.*data\.download"):
        build(cfg)
    cfg = load_config(None, ["data.name=fashion_mnist", f"data.root={tmp_path}"])
    with pytest.raises(DatasetNotFoundError, match="apt-get install dataset-fashion-mnist"):
        build(cfg)
