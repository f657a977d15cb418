"""Where in-memory image-classification data comes from (CIFAR-10, CIFAR-100, Fashion-MNIST): canonical archives,
ImageFolder trees of same-size images, or the JPEG copy of CIFAR-10 in the offline mirror. Folders of images of any
size, and Hugging Face datasets, stream instead (``hkt.data.stream``). Every source here is decoded once into uint8
arrays ``(N, H, W, C)`` cached under
``$HKT_CACHE_DIR`` (default ``~/.cache/hkt``) as ``.npy`` files, loaded without pickle.

The cache is keyed by a **fingerprint of the source files** (resolved path, size, modification time), so a
different ``data.root``, or a changed file in the same root, never reads a stale decoded copy.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hkt.io import save_array, write_atomic

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


class DatasetNotFoundError(FileNotFoundError):
    """A dataset root lacks the expected files; the message says how to get them."""


@dataclass
class Decoded:
    """A decoded dataset: images ``(N, H, W, C)`` uint8, labels ``(N,)`` int64, and where they came from."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: tuple[str, ...]  # the dataset's class names; labels index this tuple
    root: str  # the resolved source (folder or archive)
    fingerprint: str  # sha1 of the source files' paths, sizes and mtimes


def cache_dir() -> Path:
    return Path(os.environ.get("HKT_CACHE_DIR", Path.home() / ".cache" / "hkt"))


def data_root(root: str | os.PathLike | None) -> Path:
    return Path(root or os.environ.get("HKT_DATA_DIR", cache_dir() / "data"))


def fingerprint(files: list[Path]) -> str:
    """A stable digest of what ``files`` are (resolved path, size, mtime), cheap even for 60,000 images."""
    h = hashlib.sha1()
    for f in sorted(Path(p).resolve() for p in files):
        st = f.stat()
        h.update(f"{f}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _files_under(*folders: Path) -> list[Path]:
    return [Path(d) / n for folder in folders for d, _, names in os.walk(folder) for n in names]


_NAMES = ("train_x", "train_y", "test_x", "test_y")


def _cached(name: str, files: list[Path], root: Path, classes: tuple[str, ...], build) -> Decoded:  # type: ignore[no-untyped-def]
    """Decoded arrays of ``files``: read from the cache when decoded before from exactly these files, else
    ``build() -> (train_x, train_y, test_x, test_y)`` once and cache."""
    fp = fingerprint(files)
    folder = cache_dir() / "arrays" / f"{name}-{fp[:16]}"
    if all((folder / f"{n}.npy").is_file() for n in _NAMES):
        arrays = [np.load(folder / f"{n}.npy", allow_pickle=False) for n in _NAMES]
    else:
        arrays = list(build())
        for n, a in zip(_NAMES, arrays):
            save_array(folder / f"{n}.npy", a)
        write_atomic(folder / "source.json", json.dumps({"root": str(root.resolve()), "fingerprint": fp, "files": len(files)}))
    return Decoded(*arrays, classes=classes, root=str(root.resolve()), fingerprint=fp)


def read_image_folder(folder: Path, classes: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Decode ``folder/<class>/*`` (ImageFolder layout) into ``(N, H, W, C)`` uint8 and ``(N,)`` int64; label =
    index of the class in ``classes``."""
    from PIL import Image

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


def tree_classes(tree: Path) -> tuple[str, ...]:
    """Class names of an ImageFolder tree ``tree/{train,test}/<class>/``; both splits must have the same set."""
    found = {s: {d.name for d in (tree / s).iterdir() if d.is_dir()} for s in ("train", "test")}
    if found["train"] != found["test"]:
        only_train, only_test = sorted(found["train"] - found["test"]), sorted(found["test"] - found["train"])
        raise ValueError(
            f"ImageFolder tree {tree}: train/ and test/ have different classes (only in train: {only_train[:5]}; only in "
            f"test: {only_test[:5]}). Labels are class-folder indices, so both splits need the same class folders."
        )
    if not found["train"]:
        raise DatasetNotFoundError(f"{tree}/train has no class folders; expected train/<class>/<image>")
    return tuple(sorted(found["train"]))


def cifar10(root: str | os.PathLike | None = None, download: bool = False) -> Decoded:
    """CIFAR-10 from, in order: ``cifar-10-batches-py``/``cifar-10-python.tar.gz`` under ``root`` (md5-checked by
    torchvision), an ImageFolder tree ``root/train``, ``root/test`` (or ``root/cifar10``), the JPEG-75 copy
    ``root/cifar10-jpeg.tar.gz``; else a download of the canonical archive when ``download``."""
    root = data_root(root)
    canonical = root / "cifar-10-batches-py"
    if canonical.is_dir() or (root / "cifar-10-python.tar.gz").is_file() or download:
        if not canonical.is_dir():  # extract (or download, md5-checked) once, so the fingerprint sees the batches
            from torchvision.datasets import CIFAR10

            CIFAR10(str(root), True, download=download)
        return _cached("cifar10", _files_under(canonical), canonical, CIFAR10_CLASSES, lambda: _cifar10_torchvision(root))
    for tree in (root, root / "cifar10"):
        if (tree / "train").is_dir() and (tree / "test").is_dir():
            classes = tree_classes(tree)
            files = _files_under(tree / "train", tree / "test")
            return _cached("tree", files, tree, classes, lambda: _tree(tree, classes))
    archive = root / "cifar10-jpeg.tar.gz"
    if archive.is_file():
        return _cached("cifar10-jpeg75", [archive], archive, CIFAR10_CLASSES, lambda: _jpeg_archive(archive))
    raise DatasetNotFoundError(
        f"no CIFAR-10 under {root}: expected cifar-10-python.tar.gz (https://www.cs.toronto.edu/~kriz/cifar.html), "
        "an ImageFolder tree train/<class>/, test/<class>/, or cifar10-jpeg.tar.gz. Set data.root (or $HKT_DATA_DIR) "
        "to the folder holding one of them, or set data.download: true when online."
    )


def cifar100(root: str | os.PathLike | None = None, download: bool = False) -> Decoded:
    """CIFAR-100 (fine labels) from, in order: ``cifar-100-python``/``cifar-100-python.tar.gz`` under ``root``
    (md5-checked by torchvision), an ImageFolder tree ``root/cifar100/{train,test}/<class>/`` (or ``root`` itself
    when it holds exactly 100 class folders); else a download of the canonical archive when ``download``. Labels of
    a tree index its sorted class folders, which for CIFAR-100's names is the archive's (alphabetical) order."""
    root = data_root(root)
    canonical = root / "cifar-100-python"
    if canonical.is_dir() or (root / "cifar-100-python.tar.gz").is_file() or download:
        from torchvision.datasets import CIFAR100

        if not canonical.is_dir():  # extract (or download, md5-checked) once, so the fingerprint sees the files
            CIFAR100(str(root), True, download=download)
        classes = tuple(CIFAR100(str(root), False).classes)
        return _cached("cifar100", _files_under(canonical), canonical, classes, lambda: _cifar100_torchvision(root))
    for tree in (root / "cifar100", root):
        if (tree / "train").is_dir() and (tree / "test").is_dir():
            classes = tree_classes(tree)
            if len(classes) != 100:
                if tree == root:
                    continue  # another dataset's tree (e.g. CIFAR-10's) at the data root
                raise ValueError(f"{tree} is a CIFAR-100 tree with {len(classes)} class folders; CIFAR-100 has 100")
            files = _files_under(tree / "train", tree / "test")
            return _cached("tree", files, tree, classes, lambda: _tree(tree, classes))
    raise DatasetNotFoundError(
        f"no CIFAR-100 under {root}: expected cifar-100-python.tar.gz (https://www.cs.toronto.edu/~kriz/cifar.html) or an "
        "ImageFolder tree cifar100/train/<class>/, cifar100/test/<class>/. Set data.root (or $HKT_DATA_DIR) to the "
        "folder holding one of them, or set data.download: true when online."
    )


def _cifar100_torchvision(root: Path) -> tuple[np.ndarray, ...]:
    from torchvision.datasets import CIFAR100

    train, test = CIFAR100(str(root), True), CIFAR100(str(root), False)
    return train.data, np.asarray(train.targets, np.int64), test.data, np.asarray(test.targets, np.int64)


def _cifar10_torchvision(root: Path) -> tuple[np.ndarray, ...]:
    from torchvision.datasets import CIFAR10

    train, test = CIFAR10(str(root), True), CIFAR10(str(root), False)
    return train.data, np.asarray(train.targets, np.int64), test.data, np.asarray(test.targets, np.int64)


def _tree(tree: Path, classes: tuple[str, ...]) -> tuple[np.ndarray, ...]:
    return (*read_image_folder(tree / "train", classes), *read_image_folder(tree / "test", classes))


def _scratch() -> tempfile.TemporaryDirectory:
    cache_dir().mkdir(parents=True, exist_ok=True)
    return tempfile.TemporaryDirectory(dir=cache_dir())


def _jpeg_archive(archive: Path) -> tuple[np.ndarray, ...]:
    with _scratch() as tmp:
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        inner = next((p.parent for p in Path(tmp).rglob("train") if p.is_dir() and (p.parent / "test").is_dir()), None)
        if inner is None:
            raise DatasetNotFoundError(f"{archive} does not contain train/ and test/ ImageFolder trees")
        classes = tree_classes(inner)
        if classes != tuple(sorted(CIFAR10_CLASSES)):
            raise ValueError(f"{archive} has classes {classes}; expected the 10 CIFAR-10 classes {CIFAR10_CLASSES}")
        # label = index in CIFAR-10's canonical class order (which is alphabetical), as the published checkpoints use
        return _tree(inner, CIFAR10_CLASSES)


FASHION_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def fashion_mnist(root: str | os.PathLike | None = None, download: bool = False) -> Decoded:
    """Fashion-MNIST from the canonical idx(.gz) files in ``root`` (default ``$HKT_FASHION_MNIST_DIR`` or
    ``/usr/share/datasets/fashion-mnist``, Debian's ``dataset-fashion-mnist``), read by torchvision; or a
    download (md5-checked by torchvision) when ``download``. Images ``(N, 28, 28, 1)``."""
    root = Path(root or os.environ.get("HKT_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
    present = [root / f if (root / f).is_file() else root / f"{f}.gz" for f in FASHION_FILES]
    if not all(p.is_file() for p in present):
        if not download:
            raise DatasetNotFoundError(
                f"no Fashion-MNIST idx files in {root} (need {', '.join(f + '.gz' for f in FASHION_FILES)}). "
                "On Debian/Ubuntu: `apt-get install dataset-fashion-mnist`; or set data.root to a folder with the files "
                "from https://github.com/zalandoresearch/fashion-mnist; or set data.download: true when online."
            )
        from torchvision.datasets import FashionMNIST

        for train in (True, False):  # md5-checked download into root/FashionMNIST/raw
            FashionMNIST(str(root), train, download=True)
        root = root / "FashionMNIST" / "raw"
        present = [root / f for f in FASHION_FILES]
    return _cached("fashion-mnist", present, root, FASHION_CLASSES, lambda: _fashion_idx(present))


def _fashion_idx(files: list[Path]) -> tuple[np.ndarray, ...]:
    """Read the four idx files with torchvision's reader (which takes uncompressed files)."""
    from torchvision.datasets.mnist import read_image_file, read_label_file

    out = []
    with _scratch() as tmp:
        for f, name in zip(files, FASHION_FILES):
            raw = Path(tmp) / name
            with gzip.open(f) if f.suffix == ".gz" else open(f, "rb") as fin, open(raw, "wb") as fout:
                shutil.copyfileobj(fin, fout)
            out.append(
                read_label_file(str(raw)).numpy().astype(np.int64) if "labels" in name else read_image_file(str(raw)).numpy()[..., None]
            )
    return tuple(out)
