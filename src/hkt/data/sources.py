"""Where image-classification data comes from: canonical archives, ImageFolder trees, or the JPEG copy of
CIFAR-10 in the offline mirror. Every source is decoded once into uint8 arrays ``(N, H, W, C)`` cached under
``$HKT_CACHE_DIR`` (default ``~/.cache/hkt``) as ``.npy`` files, loaded without pickle.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from hkt.training.checkpoint_io import publish

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # train_x, train_y, test_x, test_y

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


class DatasetNotFoundError(FileNotFoundError):
    """A dataset root lacks the expected files; the message says how to get them."""


def cache_dir() -> Path:
    return Path(os.environ.get("HKT_CACHE_DIR", Path.home() / ".cache" / "hkt"))


def data_root(root: str | os.PathLike | None) -> Path:
    return Path(root or os.environ.get("HKT_DATA_DIR", cache_dir() / "data"))


def _save_atomic(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npy.tmp")
    with os.fdopen(fd, "wb") as f:
        np.save(f, array, allow_pickle=False)
    publish(tmp, path)


def _cached(key: str, build) -> Arrays:  # type: ignore[no-untyped-def]
    folder = cache_dir() / "arrays" / key
    names = ("train_x", "train_y", "test_x", "test_y")
    if all((folder / f"{n}.npy").is_file() for n in names):
        return tuple(np.load(folder / f"{n}.npy", allow_pickle=False) for n in names)  # type: ignore[return-value]
    arrays = build()
    for n, a in zip(names, arrays):
        _save_atomic(folder / f"{n}.npy", a)
    return arrays


def read_image_folder(folder: Path, classes: tuple[str, ...] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Decode ``folder/<class>/*`` (ImageFolder layout) into ``(N, H, W, C)`` uint8 and ``(N,)`` int64."""
    from PIL import Image

    classes = classes or tuple(sorted(d.name for d in folder.iterdir() if d.is_dir()))
    images, labels = [], []
    for label, name in enumerate(classes):
        files = sorted((folder / name).iterdir()) if (folder / name).is_dir() else []
        if not files:
            raise DatasetNotFoundError(f"{folder / name} has no images; expected ImageFolder layout <split>/<class>/<image>")
        for f in files:
            with Image.open(f) as im:
                images.append(np.asarray(im.convert("RGB")))
            labels.append(label)
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def cifar10(root: str | os.PathLike | None = None, download: bool = False) -> Arrays:
    """CIFAR-10 from, in order: ``cifar-10-batches-py``/``cifar-10-python.tar.gz`` under ``root`` (md5-checked by
    torchvision), an ImageFolder tree ``root/train``, ``root/test`` (or ``root/cifar10``), the JPEG-75 copy
    ``root/cifar10-jpeg.tar.gz``; else a download of the canonical archive when ``download``."""
    root = data_root(root)
    if (root / "cifar-10-batches-py").is_dir() or (root / "cifar-10-python.tar.gz").is_file() or download:
        return _cached("cifar10", lambda: _cifar10_torchvision(root, download))
    for tree in (root, root / "cifar10"):
        if (tree / "train").is_dir() and (tree / "test").is_dir():
            # a stable key: str hashes are salted per process, so hash() would miss the cache every run
            key = hashlib.sha1(str(tree.resolve()).encode()).hexdigest()[:12]
            return _cached(f"cifar10-tree-{key}", lambda: _tree(tree))
    archive = root / "cifar10-jpeg.tar.gz"
    if archive.is_file():
        return _cached("cifar10-jpeg75", lambda: _jpeg_archive(archive))
    raise DatasetNotFoundError(
        f"no CIFAR-10 under {root}: expected cifar-10-python.tar.gz (https://www.cs.toronto.edu/~kriz/cifar.html), "
        "an ImageFolder tree train/<class>/, test/<class>/, or cifar10-jpeg.tar.gz. Set data.root (or $HKT_DATA_DIR) "
        "to the folder holding one of them, or set data.download: true when online."
    )


def _cifar10_torchvision(root: Path, download: bool) -> Arrays:
    from torchvision.datasets import CIFAR10

    train, test = CIFAR10(str(root), True, download=download), CIFAR10(str(root), False, download=download)
    return train.data, np.asarray(train.targets, np.int64), test.data, np.asarray(test.targets, np.int64)


def _tree(tree: Path) -> Arrays:
    classes = tuple(sorted(d.name for d in (tree / "train").iterdir() if d.is_dir()))
    return (*read_image_folder(tree / "train", classes), *read_image_folder(tree / "test", classes))


def _jpeg_archive(archive: Path) -> Arrays:
    target = cache_dir() / "extracted" / "cifar10-jpeg"
    if not (target / ".complete").is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent))
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        inner = next((p.parent for p in tmp.rglob("train") if p.is_dir() and (p.parent / "test").is_dir()), None)
        if inner is None:
            raise DatasetNotFoundError(f"{archive} does not contain train/ and test/ ImageFolder trees")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(inner, target)
        shutil.rmtree(tmp, ignore_errors=True)
        (target / ".complete").touch()
    return _tree(target)


FASHION_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def fashion_mnist(root: str | os.PathLike | None = None, download: bool = False) -> Arrays:
    """Fashion-MNIST from the canonical idx(.gz) files in ``root`` (default ``$HKT_FASHION_MNIST_DIR`` or
    ``/usr/share/datasets/fashion-mnist``, Debian's ``dataset-fashion-mnist``), read by torchvision; or a
    download (md5-checked by torchvision) when ``download``. Images ``(N, 28, 28, 1)``."""
    root = Path(root or os.environ.get("HKT_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
    found = all((root / f).is_file() or (root / f"{f}.gz").is_file() for f in FASHION_FILES)
    if not found and not download:
        raise DatasetNotFoundError(
            f"no Fashion-MNIST idx files in {root} (need {', '.join(f + '.gz' for f in FASHION_FILES)}). "
            "On Debian/Ubuntu: `apt-get install dataset-fashion-mnist`; or set data.root to a folder with the files "
            "from https://github.com/zalandoresearch/fashion-mnist; or set data.download: true when online."
        )
    return _cached("fashion-mnist", lambda: _fashion_torchvision(root, found, download))


def _fashion_torchvision(root: Path, found: bool, download: bool) -> Arrays:
    from torchvision.datasets import FashionMNIST

    base = cache_dir() / "torchvision"
    raw = base / "FashionMNIST" / "raw"
    if found:  # stage the local files where torchvision looks for them
        raw.mkdir(parents=True, exist_ok=True)
        for f in FASHION_FILES:
            if not (raw / f).is_file():
                src = root / f
                if src.is_file():
                    shutil.copyfile(src, raw / f)
                else:
                    with gzip.open(root / f"{f}.gz") as fin, open(raw / f"{f}.part", "wb") as fout:
                        shutil.copyfileobj(fin, fout)
                    os.replace(raw / f"{f}.part", raw / f)
    train = FashionMNIST(str(base), True, download=download and not found)
    test = FashionMNIST(str(base), False, download=download and not found)
    return (
        train.data.numpy()[..., None], train.targets.numpy().astype(np.int64),
        test.data.numpy()[..., None], test.targets.numpy().astype(np.int64),
    )
