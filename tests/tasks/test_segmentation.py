"""Segmentation on a small crop of the real LiTS sample (case 117): reading, splits, metrics against
hand-computed values, per-pixel KD, HKT through U-Net skips and a torchvision model, overfitting one batch,
and fit / test / export through the command line."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hkt.cli import main
from hkt.data.lits import NotNiftiError, find_cases, read_case
from hkt.data.segmentation import SegmentationData
from hkt.methods import build_method, kd_loss
from hkt.models import build_model
from hkt.tasks import Segmentation
from hkt.tasks.segmentation import RegionDice, soft_dice_loss

SAMPLE = Path(__file__).resolve().parents[3] / "shared" / "data" / "lits-sample"


def write_case(folder: Path, case: int, hu: np.ndarray, labels: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(hu.astype(np.int16), np.eye(4)), folder / f"volume-{case}.nii.gz")
    nib.save(nib.Nifti1Image(labels.astype(np.uint8), np.eye(4)), folder / f"segmentation-{case}.nii.gz")


@pytest.fixture(scope="module")
def crop() -> tuple[np.ndarray, np.ndarray]:
    """32 x 32 in-plane crop through liver and tumour, 24 axial slices, of the real volume, in the LiTS release
    layout (axial slices along the last axis; the sample stores them along the first)."""
    hu = np.moveaxis(np.asarray(nib.load(SAMPLE / "volume-117.nii.gz").dataobj), 0, 2)
    labels = np.moveaxis(np.asarray(nib.load(SAMPLE / "segmentation-117.nii.gz").dataobj), 0, 2)
    z = slice(40, 64)
    ys, xs = np.nonzero((labels[:, :, z] == 2).any(2))
    y0, x0 = int(np.clip(ys.mean() - 16, 0, 96)), int(np.clip(xs.mean() - 16, 0, 96))
    return hu[y0 : y0 + 32, x0 : x0 + 32, z], labels[y0 : y0 + 32, x0 : x0 + 32, z]


@pytest.fixture
def crop_root(tmp_path, crop) -> Path:
    write_case(tmp_path / "lits", 117, *crop)
    return tmp_path / "lits"


def test_slices_windowing_and_block_split(crop_root, crop):
    data = SegmentationData(root=str(crop_root), context=1, gap=2, fractions=(0.6, 0.15, 0.25), batch_size=4, num_workers=0)
    data.setup()
    usable = 24 - 2 * 2
    assert {k: len(v) for k, v in data.splits.items()} == {"train": int(0.6 * usable), "val": int(0.15 * usable), "test": 24 - 12 - 3 - 4}
    train, val, test = (data.splits[s].index for s in ("train", "val", "test"))
    assert val[0][1] - train[-1][1] == 3 and test[0][1] - val[-1][1] == 3  # 2-slice gaps, contiguous blocks
    image, mask = data.splits["val"][0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and mask.shape == (32, 32) and mask.dtype == torch.int64
    z = val[0][1]
    hu, labels = crop
    expected = (np.clip(hu[:, :, z - 1 : z + 2].astype(np.float32), -200, 250) + 200) / 450 * 2 - 1
    assert np.allclose(image.numpy(), np.moveaxis(expected, 2, 0), atol=1e-6)  # 2.5-D: neighbours as channels
    assert torch.equal(mask, torch.from_numpy(labels[:, :, z].astype(np.int64)))
    assert data.describe()["split"] == "slices" and data.in_channels == 3


def test_axial_axis_is_configurable(crop_root, crop, tmp_path):
    write_case(tmp_path / "first", 117, *(np.moveaxis(a, 2, 0) for a in crop))  # axial slices along axis 0
    items = []
    for root, axis in ((crop_root, 2), (tmp_path / "first", 0)):
        data = SegmentationData(root=str(root), axis=axis, gap=2, num_workers=0)
        data.setup()
        items.append(data.splits["test"][3])
    assert torch.equal(items[0][0], items[1][0]) and torch.equal(items[0][1], items[1][1])


def test_augmentation_moves_image_and_mask_together(crop_root):
    """Batched on the device: the same flip / rotation / scale for image and mask, per sample, seeded per batch."""
    data = SegmentationData(root=str(crop_root), gap=0, batch_size=4, num_workers=0)
    data.setup()
    loader = data.train_dataloader()
    changed = 0
    for epoch in range(3):
        loader.sampler.set_epoch(epoch)
        raw = next(iter(loader))
        image, mask = data.on_after_batch_transfer(raw)
        again = data.on_after_batch_transfer(next(iter(loader)))
        assert torch.equal(image, again[0]) and torch.equal(mask, again[1])  # seeded per (epoch, batch)
        assert set(mask.unique().tolist()) <= {0, 1, 2}  # nearest interpolation: no new labels
        for b in range(len(mask)):
            changed += int(not torch.equal(mask[b], raw[1][b]))
            # the transformed image still predicts the transformed mask: liver pixels stay brighter than air
            if (mask[b] >= 1).any() and (mask[b] == 0).any():
                assert image[b, 0][mask[b] >= 1].mean() > image[b, 0][mask[b] == 0].mean() - 0.5
    assert changed >= 8


def test_patient_split_keeps_cases_apart(tmp_path, crop):
    for case in range(5):
        write_case(tmp_path / "lits", case, *crop)
    data = SegmentationData(root=str(tmp_path / "lits"), fractions=(0.6, 0.2, 0.2), num_workers=0)
    data.setup()
    cases = {s: {c for c, _ in data.splits[s].index} for s in ("train", "val", "test")}
    assert data.describe()["split"] == "patients" and [len(cases[s]) for s in ("train", "val", "test")] == [3, 1, 1]
    assert not (cases["train"] & cases["val"]) and not (cases["train"] & cases["test"]) and not (cases["val"] & cases["test"])


def test_region_dice_and_iou_by_hand():
    target = torch.tensor([[[0, 1, 1, 2], [0, 1, 2, 2]]])
    pred = torch.tensor([[[0, 1, 2, 2], [1, 1, 1, 2]]])
    # liver = {1, 2}: |T| = 6, |P| = 7, |T & P| = 6 -> 12/13; tumour = {2}: |T| = 3, |P| = 3, overlap 2 -> 4/6
    liver, tumour, both = RegionDice([(1, 2)]), RegionDice([(2,)]), RegionDice([(1, 2), (2,)])
    for i in range(2):  # accumulated over updates (global over the split), not averaged per slice
        for m in (liver, tumour, both):
            m.update(pred[:, i : i + 1], target[:, i : i + 1])
    assert liver.compute().item() == pytest.approx(12 / 13) and tumour.compute().item() == pytest.approx(4 / 6)
    assert both.compute().item() == pytest.approx((12 / 13 + 4 / 6) / 2)
    logits = F.one_hot(pred, 3).permute(0, 3, 1, 2).float()
    metrics = Segmentation().metrics(SegmentationData())
    metrics.update(logits, target)
    # IoU per class over the 8 pixels: background T={0,4} P={0} -> 1/2; liver T={1,2,5} P={1,4,5,6} -> 2/5;
    # tumour T={3,6,7} P={2,3,7} -> 2/4
    assert metrics.compute()["miou"].item() == pytest.approx((1 / 2 + 2 / 5 + 2 / 4) / 3)
    assert soft_dice_loss(logits * 100, target).item() > 0.05
    assert soft_dice_loss(F.one_hot(target, 3).permute(0, 3, 1, 2).float() * 100, target).item() < 1e-3


def test_pixel_kd_is_the_mean_of_per_pixel_kd():
    student, teacher = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
    per_pixel = torch.stack(
        [kd_loss(student[b, :, i, j][None], teacher[b, :, i, j][None]) for b in range(2) for i in range(4) for j in range(5)]
    )
    assert kd_loss(student, teacher).item() == pytest.approx(per_pixel.mean().item(), rel=1e-5)


def test_hkt_through_unet_skips_keeps_the_native_path_exact():
    torch.manual_seed(0)
    parent, child = build_model("unet3", 3, 1, 8).eval(), build_model("unet3", 3, 1, 4)
    x, y = torch.randn(4, 1, 32, 32), torch.randint(0, 3, (4, 32, 32))
    # encoder.1 is crossed by the skip from encoder.0; decoder.1 reads the skip from encoder.1
    method = build_method("hkt", child, parent, x[:2], Segmentation(1.0), genes=["encoder.1", "bottleneck", "decoder.1"])
    method.eval()
    with torch.no_grad():
        r = method.inheritance(parent, child, x)
        assert torch.equal(r.child, child(x)) and r.inherited.shape == (4, 3, 32, 32)
    method.train()
    out, losses = method.forward_train(x, y)
    sum(losses.values()).backward()
    assert set(losses) == {"child", "inherit", "parent"} and out.shape == (4, 3, 32, 32)
    assert child.encoder[0][0].weight.grad is not None
    assert set(method.log_values()) == {"gate/encoder.1", "gate/bottleneck", "gate/decoder.1"}
    assert method.inheritance.attentions[1].gate.shape == (4, 1, 4, 4)  # one gate per position


def test_torchvision_lraspp_as_child_with_a_gene_across_its_low_level_skip():
    torch.manual_seed(0)
    parent, child = build_model("unet4", 3, 3, 4).eval(), build_model("torchvision:lraspp_mobilenet_v3_large", 3, 3)
    x, y = torch.randn(2, 3, 64, 64), torch.randint(0, 3, (2, 64, 64))
    # the head reads backbone.4 ("low", before the gene) and backbone.16 ("high", after it)
    method = build_method("hkt", child, parent, x, Segmentation(), genes=[{"parent": "bottleneck", "child": "net.backbone.8"}])
    out, losses = method.train().forward_train(x, y)
    assert out.shape == (2, 3, 64, 64) and all(v.isfinite() for v in losses.values())
    with pytest.raises(ValueError, match="context=1"):
        build_model("torchvision:lraspp_mobilenet_v3_large", 3, 1)


def test_overfit_one_batch(crop_root):
    torch.manual_seed(0)
    data = SegmentationData(root=str(crop_root), gap=0, batch_size=4, num_workers=0)
    data.setup()
    x, y = next(iter(data.val_dataloader()))
    task = Segmentation(dice_weight=1.0)
    method = build_method("ce", build_model("unet3", 3, 1, 8), None, x, task)
    opt = torch.optim.Adam(method.learnable_parameters(), lr=1e-2)
    for _ in range(120):
        opt.zero_grad()
        _, losses = method.train().forward_train(x, y)
        losses["task"].backward()
        opt.step()
    dice = RegionDice([(1, 2), (2,)])
    with torch.no_grad():
        method.child.train()  # batch statistics: the one batch it fitted
        dice.update(method.child(x), y)
    assert dice.compute().item() > 0.9


def test_fit_test_export_segmentation_cli(crop_root, tmp_path, capsys):
    common = [
        "-c",
        "configs/lits_unet_cpu.yaml",
        f"data.root={crop_root}",
        "data.gap=0",
        "data.batch_size=4",
        "parent.arch=unet3",
        "parent.width=8",
        "child.arch=unet3",
        f"out_dir={tmp_path / 'parent'}",
        "trainer.max_epochs=2",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
    ]
    assert main(["fit", *common, "parent.arch=null", "parent.weights=null", "child.width=8", "method={name: ce}"]) == 0
    parent_ckpt = tmp_path / "parent" / "checkpoints" / "best.ckpt"
    rec = json.loads((tmp_path / "parent" / "result.json").read_text())
    assert 0 <= rec["test_dice_liver"] <= 1 and 0 <= rec["test_dice_tumour"] <= 1 and "val_dice_mean_best" in rec
    child = [
        *common,
        f"parent.weights={parent_ckpt}",
        f"out_dir={tmp_path / 'child'}",
        "method={name: hkt, genes: [bottleneck, decoder.1]}",
    ]
    assert main(["fit", *child]) == 0
    capsys.readouterr()
    assert main(["test", *child]) == 0
    assert '"test/dice_tumour"' in capsys.readouterr().out
    assert main(["export", *child]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["formats"]["safetensors"]["max_abs_diff"] == 0.0
    assert report["formats"]["onnx"]["max_abs_diff"] <= 1e-4 and report["formats"]["pt2"]["max_abs_diff"] <= 1e-5
    assert report["params"] == sum(p.numel() for p in build_model("unet3", 3, 1, 4).parameters())


def test_bad_input_names_the_file_and_the_fix(tmp_path, crop):
    hu, labels = crop
    bad = labels.copy()
    bad[0, 0, 0] = 7
    write_case(tmp_path / "labels", 1, hu, bad)
    with pytest.raises(ValueError, match=r"segmentation-1\.nii\.gz holds labels \[7\].*remap"):
        read_case(*find_cases(tmp_path / "labels")[0][1:])
    write_case(tmp_path / "shape", 2, hu, labels[:, :, :10])
    with pytest.raises(ValueError, match=r"shape mismatch.*volume-2\.nii\.gz.*segmentation-2\.nii\.gz"):
        read_case(*find_cases(tmp_path / "shape")[0][1:])
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "volume-3.nii.gz").write_bytes(b"not a nifti")
    write_case(tmp_path / "junk2", 3, hu, labels)
    (tmp_path / "junk" / "segmentation-3.nii.gz").write_bytes((tmp_path / "junk2" / "segmentation-3.nii.gz").read_bytes())
    with pytest.raises(NotNiftiError, match=r"volume-3\.nii\.gz is not a readable NIfTI"):
        read_case(*find_cases(tmp_path / "junk")[0][1:])
    with pytest.raises(FileNotFoundError, match="set data.root"):
        find_cases(tmp_path / "missing")
    write_case(tmp_path / "short", 4, hu[:, :, :10], labels[:, :, :10])
    with pytest.raises(ValueError, match="the val split is empty.*data.fractions"):
        SegmentationData(root=str(tmp_path / "short"), gap=4, num_workers=0).setup()
    with pytest.raises(ValueError, match="gap"):
        SegmentationData(context=2, gap=1)
