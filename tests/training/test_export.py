"""Export round trips, one model per task, under the parity thresholds: safetensors (bit-identical), ONNX under
onnxruntime (≤ 1e-4), torch.export .pt2 (≤ 1e-5); dynamic batch (and H×W for dense models); no deprecation warning
from the default path; bad safetensors refused by name."""

import json
import warnings

import pytest
import torch
from safetensors.torch import save_file

from hkt.export import TOLERANCE, export
from hkt.io import UnreadableFileError
from hkt.methods import build_method
from hkt.models import CheckpointMismatchError, build_model, load_weights


def check(report: dict, formats=("safetensors", "onnx", "pt2")) -> None:
    for fmt in formats:
        r = report["formats"][fmt]
        assert r["ok"], (fmt, r)
        assert r["max_abs_diff"] <= TOLERANCE[fmt]
        assert len(r["max_abs_diff_by_batch"]) == 2  # the export batch and a smaller one: dynamic batch works


def test_classification_child_of_an_hkt_run_exports_without_deprecation_warnings(tmp_path):
    from hkt.data.datamodule import ImageClassificationData

    data = ImageClassificationData("cifar10", val_from="test", val_size=64, test_subset=64, num_workers=0)
    x = data.example_input(8)  # real CIFAR-10 (JPEG copy) validation images
    torch.manual_seed(0)
    method = build_method("hkt", build_model("resnet8"), build_model("resnet14"), x[:2], genes=["avgpool"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.filterwarnings("error", message=".*deprecated.*")
        report = export(method, build_model("resnet8"), x, tmp_path)
    check(report)
    assert json.loads((tmp_path / "export.json").read_text()) == report
    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp_path / "child.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(None, {session.get_inputs()[0].name: x[:5].numpy()})[0]
    assert logits.shape == (5, 10)  # a batch size never seen at export
    program = torch.export.load(str(tmp_path / "child.pt2"))
    assert torch.allclose(program.module()(x[:3]), method.child.eval()(x[:3]), atol=1e-5)


def test_torchvision_classifier_and_lraspp_segmentation_export(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(3, 3, 64, 64)
    check(
        export(
            build_model("torchvision:mobilenet_v3_small", 10).eval(),
            build_model("torchvision:mobilenet_v3_small", 10),
            x,
            tmp_path / "mnv3",
        )
    )
    seg = build_model("torchvision:lraspp_mobilenet_v3_large", 3, 3).eval()
    report = export(seg, build_model("torchvision:lraspp_mobilenet_v3_large", 3, 3), x, tmp_path / "lraspp", spatial=True)
    check(report)


def test_unet_exports_with_dynamic_height_and_width(tmp_path):
    torch.manual_seed(0)
    child = build_model("unet3", 3, 1, 4).eval()
    report = export(child, build_model("unet3", 3, 1, 4), torch.randn(2, 1, 32, 32), tmp_path, spatial=True)
    check(report)
    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp_path / "child.onnx"), providers=["CPUExecutionProvider"])
    bigger = torch.randn(1, 1, 48, 64)
    got = session.run(None, {session.get_inputs()[0].name: bigger.numpy()})[0]
    assert abs(torch.from_numpy(got) - child(bigger)).max() <= 1e-4  # another H x W than at export


def test_raft_small_exports_to_every_format(tmp_path):
    torch.manual_seed(0)
    child = build_model("torchvision:raft_small", iterations=2).eval()
    pairs = torch.randn(2, 2, 3, 128, 128)
    report = export(child, build_model("torchvision:raft_small", iterations=2), pairs, tmp_path, spatial=True)
    check(report)  # the iterative update loop unrolls; ONNX needs the exporter's optimiser off, and says so
    assert "without the ONNX graph optimiser" in report["formats"]["onnx"]["note"]
    assert report["formats"]["pt2"]["max_abs_diff"] == 0.0


def test_mismatched_or_corrupted_safetensors_are_refused_by_name(tmp_path):
    model = build_model("resnet8")
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("linear.")}
    state["head.weight"] = torch.zeros(10, 64)
    save_file(state, str(tmp_path / "wrong.safetensors"))
    with pytest.raises(CheckpointMismatchError, match=r"missing keys: linear\.bias, linear\.weight; unexpected keys: head\.weight"):
        load_weights(model, tmp_path / "wrong.safetensors")
    save_file(dict(model.state_dict()), str(tmp_path / "cut.safetensors"))
    (tmp_path / "cut.safetensors").write_bytes((tmp_path / "cut.safetensors").read_bytes()[:300])
    with pytest.raises(UnreadableFileError, match=r"cut\.safetensors is not a valid safetensors file"):
        load_weights(model, tmp_path / "cut.safetensors")


class DataDependent(torch.nn.Module):
    """Python control flow on tensor values: torch.export (and so ONNX's dynamo exporter) cannot capture it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(x) if float(x.sum()) > 0 else -self.fc(x)


def test_a_format_that_cannot_be_exported_is_named_and_the_others_are_written(tmp_path, capsys):
    x = torch.rand(3, 4)
    report = export(DataDependent().eval(), DataDependent(), x, tmp_path)
    assert report["formats"]["safetensors"]["ok"] and (tmp_path / "child.safetensors").is_file()
    assert not report["formats"]["pt2"]["ok"] and report["formats"]["pt2"]["error"]
    assert not (tmp_path / "child.pt2").exists() and not list(tmp_path.glob(".*.tmp"))  # nothing half-written
    with pytest.raises(ValueError, match="unknown export format"):
        export(DataDependent().eval(), DataDependent(), x, tmp_path, formats=["tflite"])
