"""Pretrained parents that really load, offline: a Hugging Face hub id through a snapshot laid out in a private
``HF_HOME`` (``HF_HUB_OFFLINE=1``), a timm model from a local safetensors file or ``weights_only`` checkpoint, and a
fresh head when the checkpoint was trained for another class count."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

pytest.importorskip("timm")
pytest.importorskip("transformers")

from hkt import build_model  # noqa: E402
from hkt.models import CheckpointMismatchError  # noqa: E402

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def hub_snapshot(home: Path, repo: str) -> dict[str, torch.Tensor]:
    """Write a tiny ViT classifier (5 classes) as the Hugging Face cache holds a downloaded repo; return its weights."""
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    config = ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, num_labels=5
    )
    model = ViTForImageClassification(config)
    cache = home / "hub" / f"models--{repo.replace('/', '--')}"
    model.save_pretrained(cache / "snapshots" / COMMIT)  # config.json + model.safetensors
    processor = {"image_processor_type": "ViTImageProcessor", "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "resample": 2}
    (cache / "snapshots" / COMMIT / "preprocessor_config.json").write_text(json.dumps(processor))
    (cache / "refs").mkdir(parents=True)
    (cache / "refs" / "main").write_text(COMMIT)
    return {k: v.clone() for k, v in model.state_dict().items()}


PROBE = """
import json, sys, torch
from hkt import build_model
from hkt.data.recipe import input_config
out = {}
same = build_model("hf:ViTForImageClassification:org/tiny-vit", num_classes=5)
out["same"] = {k: v.tolist() for k, v in same.state_dict().items() if k in ("classifier.bias", "vit.embeddings.cls_token")}
other = build_model("hf:ViTForImageClassification:org/tiny-vit", num_classes=3)
out["other_head"] = list(other.classifier.weight.shape)
out["other_cls"] = other.vit.embeddings.cls_token.tolist()
out["mean"] = list(input_config(same).mean)
try:
    build_model("hf:ViTForImageClassification:org/absent", num_classes=5)
except ValueError as e:
    out["absent"] = str(e)
print(json.dumps(out))
"""


def test_a_hub_id_loads_the_hubs_weights_from_the_cache_offline(tmp_path):
    weights = hub_snapshot(tmp_path / "hf", "org/tiny-vit")
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("HF_HUB_CACHE", None)
    proc = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["same"]["classifier.bias"] == weights["classifier.bias"].tolist()  # the weights, not a random init
    assert out["same"]["vit.embeddings.cls_token"] == weights["vit.embeddings.cls_token"].tolist()
    assert out["other_head"] == [3, 32] and out["other_cls"] == weights["vit.embeddings.cls_token"].tolist()  # head replaced only
    assert out["mean"] == [0.5, 0.5, 0.5]  # the model's image processor says how to normalise
    assert "org/absent" in out["absent"] and "HF_HUB_OFFLINE" in out["absent"]


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_a_timm_model_loads_a_local_file_and_replaces_a_head_of_another_class_count(tmp_path, suffix):
    torch.manual_seed(0)
    source = build_model("timm:resnet10t", num_classes=7)
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    path = tmp_path / f"resnet10t{suffix}"
    save_file(state, path) if suffix == ".safetensors" else torch.save({"state_dict": state}, path)
    same = build_model("timm:resnet10t", num_classes=7, weights=str(path))
    assert all(torch.equal(same.state_dict()[k], v) for k, v in state.items())
    other = build_model("timm:resnet10t", num_classes=3, weights=str(path))
    assert other.fc.weight.shape == (3, other.fc.in_features)
    assert all(torch.equal(other.state_dict()[k], v) for k, v in state.items() if not k.startswith("fc."))
    # a body that does not fit is still an error: only the classifier may be replaced
    with pytest.raises(CheckpointMismatchError, match="shape mismatches"):
        build_model("timm:resnet18", num_classes=7, weights=str(path))
