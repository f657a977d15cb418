"""Every bad input named in the core issue fails fast, with a message that says what to do."""

import hashlib
from pathlib import Path

import pytest
import torch

from hkt.config import ConfigError, load_config
from hkt.data.sources import DatasetNotFoundError
from hkt.models import CheckpointMismatchError, build_model, load_weights
from hkt.training.run import build


def test_unknown_config_key_suggests_the_right_one():
    with pytest.raises(ConfigError, match=r"unknown config key 'data\.batchsize'.*batch_size"):
        load_config(None, ["data.batchsize=64"])
    with pytest.raises(ConfigError, match=r"unknown config key 'trainr'.*trainer"):
        load_config(None, ["trainr={max_epochs: 1}"])
    with pytest.raises(ConfigError, match=r"'method\.atention'.*attention"):
        load_config(None, ["parent.arch=resnet20", "method={name: hkt, genes: [avgpool], atention: gated}"])
    with pytest.raises(ConfigError, match="needs a parent"):
        load_config(None, ["method={name: kd}"])


def test_missing_dataset_says_how_to_get_it(tmp_path):
    cfg = load_config(None, [f"data.root={tmp_path}"])
    with pytest.raises(DatasetNotFoundError, match=r"no CIFAR-10 under .*cifar-10-python\.tar\.gz.*data\.download"):
        build(cfg)
    cfg = load_config(None, ["data.name=fashion_mnist", f"data.root={tmp_path}"])
    with pytest.raises(DatasetNotFoundError, match="apt-get install dataset-fashion-mnist"):
        build(cfg)


def test_checkpoint_that_does_not_fit_lists_keys(tmp_path):
    path = tmp_path / "wrong.pt"
    torch.save({"state_dict": build_model("resnet8").state_dict()}, path)
    with pytest.raises(CheckpointMismatchError, match=r"missing keys: .*layer1\.1\..*Check that the architecture"):
        load_weights(build_model("resnet14"), path)
    torch.save({"conv1.weight": torch.zeros(16, 3, 3, 3), "extra.weight": torch.zeros(1)}, path)
    with pytest.raises(CheckpointMismatchError, match=r"unexpected keys: extra\.weight"):
        load_weights(build_model("resnet8"), path)


def test_tampered_weights_fail_the_hash_check(tmp_path, monkeypatch):
    (tmp_path / "cifar10").mkdir()
    (tmp_path / "cifar10" / "resnet20-12fca82f.th").write_bytes(b"not the published file")
    monkeypatch.setenv("HKT_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(RuntimeError, match="does not match the SHA-256"):
        load_weights(build_model("resnet20"), "resnet20-cifar10")


def test_weights_never_unpickle_objects(tmp_path):
    """A malicious pickle (it would create a marker file) is refused by name, never executed, and the message
    never suggests weights_only=False."""
    from hkt.io import UnreadableFileError

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "payload": Evil()}, path)
    with pytest.raises(UnreadableFileError, match=r"evil\.pt holds Python objects.*refuses to unpickle") as err:
        load_weights(build_model("resnet8"), path)
    assert "weights_only=False" not in str(err.value)
    assert not marker.exists()


def test_registry_hashes_match_the_mirror():
    from hkt.models import REGISTRY, resolve

    for name, entry in REGISTRY.items():
        path = resolve(name)
        assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == entry.sha256
