"""Splits: seeded, disjoint, class-balanced subsets (image folders list images class by class)."""

import numpy as np
import pytest
import torch

from hkt.data.datamodule import ImageClassificationData


@pytest.mark.parametrize("val_from", ["train", "test"])
def test_splits_are_random_disjoint_and_seeded(val_from):
    data = ImageClassificationData("cifar10", val_from=val_from, val_size=5000, train_subset=1000, test_subset=500, num_workers=0)
    data.setup()
    sizes = data.describe()["sizes"]
    assert sizes == {"train": 1000, "val": 5000, "test": 500}
    for split in ("train", "val", "test"):
        counts = np.bincount(data.splits[split].labels.numpy(), minlength=10)
        assert (counts > 0).all(), f"{split} split misses classes: {counts}"
    if val_from == "test":  # the two halves of the test set do not overlap
        val = {tuple(x.flatten()[:64].tolist()) for x in data.splits["val"].images}
        assert not any(tuple(x.flatten()[:64].tolist()) in val for x in data.splits["test"].images)
    again = ImageClassificationData("cifar10", val_from=val_from, val_size=5000, train_subset=1000, test_subset=500, num_workers=0)
    again.setup()
    assert torch.equal(again.splits["val"].labels, data.splits["val"].labels)


def test_training_batches_are_shuffled_and_reproducible():
    data = ImageClassificationData("fashion_mnist", val_size=500, train_subset=2000, batch_size=100, num_workers=0, train_seed=3)
    data.setup()
    loader = data.train_dataloader()

    def first_batch(epoch):
        loader.sampler.set_epoch(epoch)
        raw = next(iter(loader))
        assert raw[0].dtype == torch.uint8 and raw[2][0].tolist() == [epoch, 0]  # augmented later, on the device
        return data.on_after_batch_transfer(raw)

    x1, y1 = first_batch(1)
    x2, y2 = first_batch(1)
    assert torch.equal(x1, x2) and torch.equal(y1, y2) and x1.dtype == torch.float32
    assert len(set(y1.tolist())) > 5
    assert not torch.equal(first_batch(2)[1], y1)


def test_batched_crop_flip_matches_a_per_sample_reference():
    from hkt.data.augment import batch_generator, crop_flip

    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.uint8).reshape(2, 3, 4, 5)
    out = crop_flip(x, 2, True, batch_generator(0, 1, 2, 0))
    g = batch_generator(0, 1, 2, 0)  # the same draws, in the same order: dy, dx, flips
    dy, dx, flips = torch.randint(0, 5, (2,), generator=g), torch.randint(0, 5, (2,), generator=g), torch.rand(2, generator=g) < 0.5
    for b in range(2):
        padded = torch.nn.functional.pad(x[b], (2, 2, 2, 2))
        crop = padded[:, dy[b] : dy[b] + 4, dx[b] : dx[b] + 5]
        assert torch.equal(out[b], crop.flip(-1) if flips[b] else crop)
    assert not torch.equal(crop_flip(x, 2, True, batch_generator(0, 1, 2, 1)), out)  # another rank, other draws


def test_image_folder_tree_is_decoded_once(tmp_path, monkeypatch):
    """An ImageFolder tree is decoded by the first process only: the second reads the cache (keyed stably across
    processes) and opens no image."""
    import subprocess
    import sys

    from PIL import Image

    for split in ("train", "test"):
        for c in ("a", "b"):
            (tmp_path / "tree" / split / c).mkdir(parents=True)
            Image.new("RGB", (4, 4), (10, 20, 30)).save(tmp_path / "tree" / split / c / "0.png")
    code = (
        "import PIL.Image as I\nopened = []\nopen_ = I.open\nI.open = lambda *a, **k: opened.append(a) or open_(*a, **k)\n"
        f"from hkt.data.sources import cifar10\nprint(cifar10({str(tmp_path / 'tree')!r}).train_x.shape, len(opened))"
    )
    env = {**__import__("os").environ, "HKT_CACHE_DIR": str(tmp_path / "cache")}
    runs = [subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout for _ in range(2)]
    assert runs == ["(2, 4, 4, 3) 4\n", "(2, 4, 4, 3) 0\n"], "four images decoded once, none the second time"
