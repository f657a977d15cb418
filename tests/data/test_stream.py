"""A folder of one's own images, and Hugging Face datasets, tried as a new user would: mixed sizes and modes, EXIF
rotation, 16-bit PNGs, a truncated JPEG, missing folders and columns, exact resume after kill -9 with workers."""

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hkt.cli import main
from hkt.config import ConfigError, load_config
from hkt.data import images as images_module
from hkt.data.datamodule import ImageClassificationData
from hkt.data.folder_synthetic import MODES, class_image, write_image, write_image_folder
from hkt.data.images import CorruptImageError, open_image
from hkt.data.recipe import IMAGENET_MEAN, IMAGENET_STD, InputConfig, Recipe, TrainCrop, seeded, train_batch
from hkt.data.sources import DatasetNotFoundError
from hkt.data.stream import FolderData, HFData
from hkt.training.run import build

HKT = str(Path(sys.executable).with_name("hkt"))


@pytest.fixture
def pictures(tmp_path: Path) -> Path:
    return write_image_folder(tmp_path / "pictures", classes=3, per_class={"train": 12, "test": 4}, sizes=(24, 48))


def folder_run(root: Path, out: Path, *extra: str) -> list[str]:
    return small_run(["data.name=image_folder", f"data.root={root}"], out, *extra)


def small_run(source: list[str], out: Path, *extra: str) -> list[str]:
    """Overrides for a seconds-long ``hkt fit`` on a streaming ``source`` (its ``data.*`` keys)."""
    return [
        *source,
        "data.image_size=32",
        "data.val_size=6",
        "data.batch_size=8",
        "data.num_workers=0",
        "child.arch=resnet8",
        "child.width=4",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        f"out_dir={out}",
        *extra,
    ]


def test_every_mode_decodes_upright_to_rgb_or_grey(tmp_path):
    pixels = class_image(1, (40, 20), np.random.default_rng(0))
    for mode, ext in MODES:
        path = tmp_path / f"x-{mode.replace(';', '')}{ext}"
        write_image(path, pixels, mode)
        assert open_image(path, 3).mode == "RGB" and open_image(path, 3).size == (40, 20)
        assert open_image(path, 1).mode == "L"
    # 16-bit greyscale is scaled to 8 bits, not clipped to white
    grey16 = np.asarray(open_image(tmp_path / "x-I16.png", 1), dtype=np.int32)
    assert abs(grey16.mean() - np.asarray(Image.fromarray(pixels).convert("L"), dtype=np.int32).mean()) < 2
    # EXIF orientation 6 (rotate 90 degrees) is applied: a 40x20 photo shot sideways is 20x40 upright
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(tmp_path / "rotated.jpg", exif=exif)
    assert open_image(tmp_path / "rotated.jpg", 3).size == (20, 40)


def test_a_folder_of_mixed_images_trains_and_records_its_recipe(pictures, tmp_path):
    assert main(["fit", *folder_run(pictures, tmp_path / "run"), "trainer.max_epochs=1"]) == 0
    data = json.loads((tmp_path / "run" / "result.json").read_text())["data"]
    assert data["dataset"] == "image_folder" and data["sizes"] == {"train": 30, "val": 6, "test": 12}
    assert data["split_from"] == {"val": "train (seeded carve)", "test": "test"}
    assert data["augment"]["scale"] == [0.08, 1.0] and data["input"]["child"]["source"] == "ImageNet"
    assert data["classes"] == ["class0", "class1", "class2"] and data["skipped"] == []


def test_a_truncated_jpeg_is_skipped_and_named_or_stops_the_run(pictures, tmp_path, caplog):
    bad = pictures / "train" / "class1" / "00006.jpg"
    bad.write_bytes(bad.read_bytes()[: len(bad.read_bytes()) // 2])
    with caplog.at_level(logging.WARNING, logger="hkt"):
        data, _ = build(load_config(None, folder_run(pictures, tmp_path / "run")))
    assert data.describe()["skipped"] == ["train/class1/00006.jpg"]
    assert "train/class1/00006.jpg" in caplog.text
    with pytest.raises(CorruptImageError, match=r"00006\.jpg .*data\.skip_corrupt"):
        build(load_config(None, folder_run(pictures, tmp_path / "run", "data.skip_corrupt=false")))


def test_the_file_index_is_cached_by_the_trees_fingerprint(pictures, tmp_path, monkeypatch):
    FolderData(root=str(pictures)).setup()
    monkeypatch.setattr(images_module, "check_file", lambda path: pytest.fail(f"{path} checked again"))
    FolderData(root=str(pictures)).setup()  # the same tree: no file read
    (pictures / "train" / "class0" / "00000.jpg").unlink()
    with pytest.raises(BaseException, match="checked again"):
        FolderData(root=str(pictures)).setup()  # a changed tree is checked again


def test_bad_folders_fail_before_training_naming_the_path(tmp_path, pictures):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError, match="no train/ folder"):
        FolderData(root=str(tmp_path / "empty")).setup()
    for f in (pictures / "train" / "class2").iterdir():
        f.write_bytes(b"not an image")
    with pytest.raises(DatasetNotFoundError, match=r"class2 has no readable image"):
        FolderData(root=str(pictures)).setup()
    (pictures / "test" / "class3").mkdir()
    with pytest.raises(ValueError, match=r"only in test: \['class3'\]"):
        FolderData(root=str(pictures)).setup()


def test_labels_outside_the_class_count_fail(pictures):
    with pytest.raises(ValueError, match="outside the 2 classes"):
        FolderData(root=str(pictures), num_classes=2).setup()


def test_augment_keys_are_checked_like_every_other_key(pictures, tmp_path):
    with pytest.raises(ConfigError, match="data.augment.mixpu.*Did you mean mixup"):
        load_config(None, folder_run(pictures, tmp_path, "data.augment={mixpu: 0.2}"))
    with pytest.raises(ConfigError, match="data.augment.scale"):
        load_config(None, folder_run(pictures, tmp_path, "data.augment={scale: [0.5, 2.0]}"))
    with pytest.raises(ConfigError, match="unknown config key 'data.val_from'"):
        load_config(None, folder_run(pictures, tmp_path, "data.val_from=test"))


def test_training_samples_are_seeded_per_sample_and_leave_the_global_rng_alone(pictures):
    data = FolderData(root=str(pictures), image_size=32, augment={"auto_augment": "trivial", "erasing": 0.5})
    data.setup()
    train = data.splits["train"]
    state = torch.get_rng_state()
    a, b = train[(3, 1, 0, 0)], train[(3, 1, 0, 0)]
    assert torch.equal(a[0], b[0]) and torch.equal(torch.get_rng_state(), state)
    assert not torch.equal(a[0], train[(3, 2, 0, 0)][0])  # another epoch, another crop


def test_mixup_and_cutmix_give_soft_targets_and_every_method_trains_on_them(pictures, tmp_path):
    x, y = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8), torch.arange(8) % 3
    recipe, cfg = (
        Recipe(mixup=0.8, cutmix=1.0, label_smoothing=0.1, erasing=0.5),
        InputConfig(IMAGENET_MEAN, IMAGENET_STD, "bilinear", 0.875, ""),
    )
    mixed, target = train_batch(recipe, cfg, x, y, 3, seed=5)
    assert mixed.dtype == torch.float32 and target.shape == (8, 3) and torch.allclose(target.sum(1), torch.ones(8))
    assert torch.equal(train_batch(recipe, cfg, x, y, 3, seed=5)[0], mixed)  # seeded
    run = folder_run(pictures, tmp_path / "dkd", "data.augment={mixup: 0.8, cutmix: 1.0, label_smoothing: 0.1}")
    run += ["parent.arch=resnet8", "parent.width=4", "method={name: dkd}", "trainer.max_epochs=1"]
    assert main(["fit", *run]) == 0


def test_a_parent_with_another_normalisation_is_fed_its_own(pictures):
    timm = pytest.importorskip("timm")
    data = FolderData(root=str(pictures), image_size=32)
    data.setup()
    child = timm.create_model("resnet10t", num_classes=3)
    parent = timm.create_model("resnet10t", num_classes=3)
    clip = ((0.4815, 0.4578, 0.4082), (0.2686, 0.2613, 0.2758))
    parent.pretrained_cfg = {**parent.pretrained_cfg, "mean": clip[0], "std": clip[1]}
    hook = data.fit_to(child, parent)
    raw = torch.rand(2, 3, 8, 8)
    imagenet = (raw - torch.tensor(data.input.mean)[:, None, None]) / torch.tensor(data.input.std)[:, None, None]
    (converted,) = hook(parent, (imagenet,))
    expected = (raw - torch.tensor(clip[0])[:, None, None]) / torch.tensor(clip[1])[:, None, None]
    assert torch.allclose(converted, expected, atol=1e-5)
    assert data.describe()["input"]["parent"]["mean"] == list(clip[0])
    assert data.fit_to(child, child) is None  # the same normalisation: no conversion


def test_kill_9_mid_epoch_then_resume_with_workers_equals_a_straight_run(pictures, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed = folder_run(pictures, tmp_path / "killed", "trainer.max_epochs=2", "data.num_workers=2")
    proc = subprocess.run([HKT, "fit", *killed], env={**env, "HKT_KILL_AT": "train_batch@5"}, capture_output=True, timeout=1200)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert subprocess.run([HKT, "fit", "--resume", *killed], env=env, capture_output=True, timeout=1200).returncode == 0
    straight = folder_run(pictures, tmp_path / "straight", "trainer.max_epochs=2")
    assert subprocess.run([HKT, "fit", *straight], env=env, capture_output=True, timeout=1200).returncode == 0
    a, b = (torch.load(tmp_path / r / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"] for r in ("killed", "straight"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a if k.startswith("method.child."))


def test_cifar100_reads_an_imagefolder_tree(tmp_path):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for k in range(100):
            write_image(tmp_path / "cifar100" / split / f"c{k:03d}" / "0.png", rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), "RGB")
    data = ImageClassificationData("cifar100", root=str(tmp_path), val_size=20, num_workers=0)
    data.setup()
    assert data.num_classes == 100 and data.describe()["sizes"] == {"train": 80, "val": 20, "test": 100}
    (tmp_path / "cifar100" / "train" / "c099").rename(tmp_path / "cifar100" / "train" / "extra")
    with pytest.raises(ValueError, match="different classes"):
        ImageClassificationData("cifar100", root=str(tmp_path)).setup()


def hf_dataset(folder: Path) -> Path:
    datasets = pytest.importorskip("datasets")
    rng = np.random.default_rng(0)
    features = datasets.Features(
        {"img": datasets.Image(), "fine": datasets.ClassLabel(names=["cat", "dog", "fox"]), "note": datasets.Value("string")}
    )

    def rows(n: int) -> dict:
        labels = [i % 3 for i in range(n)]
        sizes = rng.integers(20, 40, (n, 2))
        imgs = [Image.fromarray(class_image(y, (int(w), int(h)), rng)) for y, (w, h) in zip(labels, sizes)]
        return {"img": imgs, "fine": labels, "note": ["x"] * n}

    splits = {s: datasets.Dataset.from_dict(rows(n), features=features) for s, n in (("train", 30), ("test", 9))}
    datasets.DatasetDict(splits).save_to_disk(str(folder))
    return folder


def test_a_hugging_face_dataset_from_disk_trains(tmp_path):
    folder = hf_dataset(tmp_path / "hf")
    data = HFData(path=str(folder), image_column="img", label_column="fine", image_size=32, val_size=6, num_workers=0)
    data.setup()
    assert data.describe()["classes"] == ["cat", "dog", "fox"] and data.describe()["sizes"] == {"train": 24, "val": 6, "test": 9}
    assert data.splits["val"][0][0].shape == (3, 32, 32)
    source = ["data.name=hf", f"data.path={folder}", "data.image_column=img", "data.label_column=fine"]
    assert main(["fit", *small_run(source, tmp_path / "run", "trainer.max_epochs=1")]) == 0


def test_a_missing_hugging_face_column_lists_the_columns(tmp_path):
    folder = hf_dataset(tmp_path / "hf")
    with pytest.raises(ValueError, match=r"data.image_column 'image' is not a column .* img, fine, note"):
        HFData(path=str(folder), label_column="fine").setup()
    with pytest.raises(ValueError, match=r"data.image_column 'note' .* not an Image feature"):
        HFData(path=str(folder), image_column="note", label_column="fine").setup()
    with pytest.raises(ValueError, match=r"data.val_split 'validation' is not a split .* train, test"):
        HFData(path=str(folder), image_column="img", label_column="fine", val_split="validation").setup()


def test_the_progress_bar_counts_epochs_as_hkt_does_and_shows_the_loaders_share(pictures, tmp_path, capfd):
    run = [o for o in folder_run(pictures, tmp_path / "run", "trainer.max_epochs=2") if "enable_progress_bar" not in o]
    assert main(["fit", *run]) == 0
    err = capfd.readouterr().out  # Lightning draws its bars on stdout
    assert "epoch 2/2:" in err and "Epoch " not in err, err[-2000:]
    assert "img/s=" in err and "data=" in err and "%" in err, err[-3000:]


def test_sigterm_stops_with_a_failing_status_and_the_run_resumes(pictures, tmp_path):
    """Lightning turns SIGTERM into ``SystemExit()`` (status 0): a driver script would take the unfinished run for a
    finished one. ``hkt`` exits 143 (128 + SIGTERM), keeps the last checkpoint, and ``--resume`` finishes the run."""
    run = folder_run(pictures, tmp_path / "run", "trainer.max_epochs=2")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HKT_KILL_AT": "train_batch@5", "HKT_KILL_SIGNAL": "TERM"}
    proc = subprocess.run([HKT, "fit", *run], env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 128 + signal.SIGTERM and "stopped by SIGTERM" in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "run" / "result.json").exists() and (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    assert main(["fit", "--resume", *run]) == 0


def test_a_large_jpeg_is_decoded_at_reduced_scale_for_a_crop_that_allows_it(tmp_path):
    pixels = class_image(2, (1600, 1200), np.random.default_rng(0))
    write_image(tmp_path / "big.jpg", pixels, "RGB")
    crop = TrainCrop(Recipe(scale=(0.9, 1.0)), 64, InputConfig(IMAGENET_MEAN, IMAGENET_STD, "bilinear", 0.875, ""), 3)
    with Image.open(tmp_path / "big.jpg") as lazy:
        reduced = seeded(lambda im: crop(im, "big.jpg"), lazy, 7)
        assert lazy.size == (200, 150)  # Pillow's draft: 1/8 scale
    with Image.open(tmp_path / "big.jpg") as im:
        im.load()  # decoded already: no draft
        full = seeded(lambda im: crop(im, "big.jpg"), im, 7)
    assert reduced.shape == full.shape == (3, 64, 64) and reduced.dtype == torch.uint8
    assert (reduced.float() - full.float()).abs().mean() < 6  # the same crop, decoded at another scale


def test_the_crop_is_drawn_in_the_upright_frame_of_a_rotated_photo(tmp_path):
    pixels = class_image(0, (120, 40), np.random.default_rng(0))
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    crop = TrainCrop(
        Recipe(scale=(1.0, 1.0), ratio=(1 / 3, 1 / 3), flip=False), 30, InputConfig(IMAGENET_MEAN, IMAGENET_STD, "bilinear", 0.875, ""), 3
    )
    with Image.open(tmp_path / "rotated.jpg") as im:
        out = seeded(lambda im: crop(im, "rotated.jpg"), im, 0)
    upright = np.asarray(open_image(tmp_path / "rotated.jpg", 3).resize((30, 30), Image.Resampling.BILINEAR), dtype=np.float32)
    assert np.abs(out.permute(1, 2, 0).numpy().astype(np.float32) - upright).mean() < 3  # the whole 40x120 upright photo


def test_a_draft_decode_with_odd_sides_keeps_the_crop_inside_the_image(tmp_path):
    """A JPEG of odd sides decoded at 1/8 scale rounds each side up on its own; crops reaching the far edges must stay
    inside the decoded image (a run at 32 px on 256-500 px photos failed with "box can't exceed original image size")."""
    write_image(tmp_path / "odd.jpg", class_image(1, (431, 300), np.random.default_rng(0)), "RGB")
    crop = TrainCrop(Recipe(), 32, InputConfig(IMAGENET_MEAN, IMAGENET_STD, "bilinear", 0.875, ""), 3)
    for seed in range(40):  # seed 2 drew the failing crop
        with Image.open(tmp_path / "odd.jpg") as im:
            assert seeded(lambda im: crop(im, "odd.jpg"), im, seed).shape == (3, 32, 32)
