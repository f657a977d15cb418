"""Weights and checkpoints: a checkpoint that does not fit lists its keys, tampered weights fail the hash check,
nothing is unpickled, the registry's hashes match the mirror."""

import hashlib
from pathlib import Path

import pytest
import torch

from hkt.models import CheckpointMismatchError, build_model, load_weights


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
