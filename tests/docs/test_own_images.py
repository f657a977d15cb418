"""README "Your own images", run as written on a generated folder (3 classes, mixed sizes and modes): the grid in
``configs/own_images.yaml`` (which the README shows verbatim) fine-tunes a timm ResNet parent, compares ce, kd, dkd
and hkt into a timm MobileNetV3 child, and the method chosen on validation is exported to ONNX."""

import json
import re
from pathlib import Path

import pytest

pytest.importorskip("timm")

from hkt.cli import main  # noqa: E402
from hkt.data.folder_synthetic import write_image_folder  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
GRID = ROOT / "configs" / "own_images.yaml"


def test_the_readme_shows_the_grid_this_test_runs():
    shown = re.findall(r"<!-- own-images -->\n```yaml\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    assert shown == [GRID.read_text()]


def test_your_own_images_end_to_end(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_image_folder("my_photos", classes=3, per_class={"train": 24, "test": 8}, sizes=(48, 96))
    assert main(["compare", "-c", str(GRID)]) == 0
    rows = json.loads(Path("results/my_photos/summary.json").read_text())["by_metric"]["test_acc"]["rows"]
    assert {r["method"] for r in rows} == {"ce", "kd", "dkd", "hkt"}
    winner = max(rows, key=lambda r: sum(r["val"]) / len(r["val"]))["method"]  # chosen on validation, never on test
    assert main(["export", "-c", f"runs/my_photos/runs/{winner}/seed0", "--format", "onnx"]) == 0
    report = json.loads(Path(f"runs/my_photos/runs/{winner}/seed0/export/export.json").read_text())
    assert Path(f"runs/my_photos/runs/{winner}/seed0/export/child.onnx").is_file() and "onnx" in json.dumps(report)
