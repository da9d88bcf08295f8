"""Image classification data: MNIST, CIFAR-10, image folders, and the chapters' splits.

All loaders return torch tensors: images float32 in [0, 1], channels first (N, C, H, W)
(``load_cifar10`` can keep uint8), labels int64 (N,).

- :func:`load_mnist`: the original IDX files (``fetch``-ed and SHA-256 checked).
- :func:`load_cifar10`: the python-format archive ``cifar-10-python.tar.gz`` (MD5 checked:
  the only checksum its publisher gives), or its extracted ``cifar-10-batches-py/``.
- :func:`load_image_folder` / :class:`ImageFolder`: ``<folder>/<split>/<class>/*.jpg``,
  all in memory or one image per item (a map-style ``torch.utils.data.Dataset``).
- :func:`load_classification`: ``(train, test, description)`` for the chapters' names.

Why not torchvision's ``datasets.CIFAR10`` / ``datasets.ImageFolder``: its CIFAR-10 reader
opens the batches with plain ``pickle.load`` (a tampered file runs code), downloads without
resume into its own layout, and needs the package pinned to the exact torch version; its
ImageFolder yields PIL images that need a transform. Here the download goes through the
registry (resumable, checksummed), the batches through a numpy-only unpickler, and each
reader is a few dozen lines. (Its per-batch MD5 list is reused: ``manifest.json``.)
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import torch

from .. import _validate as v
from . import registry
from .registry import DataIntegrityError, DatasetNotFoundError, data_root, fetch, verify
from .synthetic import load_digits

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}

# ----------------------------------------------------------------------------- MNIST


def _read_idx(path: Path, magic: int, shape_tail: tuple[int, ...]) -> np.ndarray:
    """Parse a gzipped IDX file (big-endian header: magic, then one uint32 per dimension)."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = len(shape_tail) + 1
    header = 4 + 4 * ndim
    if len(raw) < header or int.from_bytes(raw[:4], "big") != magic:
        raise DataIntegrityError(f"{path}: not an IDX file with magic number {magic:#x}")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if dims[1:] != shape_tail or len(raw) != header + int(np.prod(dims)):
        raise DataIntegrityError(f"{path}: header says {dims}, file has {len(raw) - header} data bytes (truncated?)")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def load_mnist(
    split: str = "train", *, root: str | os.PathLike | None = None, download_missing: bool | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST from the original IDX files.

    Returns images float32 (N, 1, 28, 28) in [0, 1] and labels int64 (N,);
    N = 60,000 for ``split="train"``, 10,000 for ``split="test"``.
    """
    v.choice("split", split, ["train", "test"])
    prefix = "train" if split == "train" else "t10k"
    images = fetch("mnist", f"{prefix}-images-idx3-ubyte.gz", root=root, download_missing=download_missing)
    labels = fetch("mnist", f"{prefix}-labels-idx1-ubyte.gz", root=root, download_missing=download_missing)
    X = _read_idx(images, 0x803, (28, 28))
    y = _read_idx(labels, 0x801, ())
    if len(X) != len(y):
        raise DataIntegrityError(f"{images} and {labels}: {len(X)} images but {len(y)} labels")
    X = torch.from_numpy(X.astype(np.float32) / 255.0).unsqueeze(1)  # (N, 1, 28, 28)
    return X, torch.from_numpy(y.astype(np.int64))


# ----------------------------------------------------------------------------- CIFAR-10


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays, nothing else.

    A pickle can name any importable callable and have it called while loading, so
    ``pickle.load`` on a file from the network runs whatever code the file's author chose.
    CIFAR-10's batches are pickled dicts of a uint8 array and lists; this reader refuses
    every global except numpy's array and dtype constructors (and ``_codecs.encode``, which
    only turns text into bytes), so a tampered file fails with
    :class:`DataIntegrityError` instead of running code. (The archive's MD5 is checked
    first; MD5 catches corruption, not a deliberate forgery, hence this second fence.)
    """

    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 spell bytes
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a data file")
        module = module.replace("numpy.core.", "numpy._core.")  # numpy >= 2 moved them
        return super().find_class(module, name)


def read_cifar10_batch(
    file: str | os.PathLike | io.IOBase, *, name: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch: a pickled dict with ``data`` uint8 (n, 3072) (rows: the
    1024 red, then green, then blue values, each row-major 32x32) and ``labels`` (n ints 0-9).

    ``file`` is a path or an open binary file (``name`` then labels errors). Returns images
    uint8 (n, 3, 32, 32) and labels int64 (n,). Read with a numpy-only unpickler (see
    :class:`_NumpyOnlyUnpickler`): a file that holds anything else raises DataIntegrityError.
    """
    name = name or str(file)
    try:
        if isinstance(file, (str, os.PathLike)):
            with open(file, "rb") as f:
                batch = _NumpyOnlyUnpickler(f, encoding="latin1").load()
        else:
            batch = _NumpyOnlyUnpickler(file, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise DataIntegrityError(f"{name}: not a CIFAR-10 python batch ({err})") from err
    if not isinstance(batch, dict) or "data" not in batch or "labels" not in batch:
        raise DataIntegrityError(f"{name}: expected a dict with 'data' and 'labels'")
    data, labels = np.asarray(batch["data"]), np.asarray(batch["labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or labels.shape != (len(data),):
        raise DataIntegrityError(
            f"{name}: expected data uint8 (n, 3072) and n labels, got {data.dtype} {data.shape} and {labels.shape}"
        )
    if len(labels) and not (0 <= labels.min() and labels.max() <= 9):
        raise DataIntegrityError(f"{name}: labels outside 0..9")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _cifar10_arrays(split: str, root: Path, download_missing: bool | None) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 (N, 3, 32, 32) and labels (N,) from the extracted folder if present
    (each batch MD5-checked against the manifest's ``extracted`` list), else from the
    (fetched, MD5-checked) archive, read in place."""
    entry = registry.manifest()["cifar10"]
    folder = root / entry["folder"]
    members = [f"{CIFAR10_FOLDER}/{b}" for b in CIFAR10_BATCHES[split]]
    if all((folder / m).is_file() for m in members):
        for m in members:
            verify(folder / m, md5=entry["extracted"][m]["md5"])
        parts = [read_cifar10_batch(folder / m) for m in members]
    else:
        archive = fetch("cifar10", CIFAR10_ARCHIVE, root=root, download_missing=download_missing)
        found = {}
        with tarfile.open(archive, "r:gz") as tar:  # one pass through the stream
            for member in tar:
                if member.name in members and member.isfile():
                    found[member.name] = read_cifar10_batch(tar.extractfile(member), name=f"{archive}:{member.name}")
        missing = [m for m in members if m not in found]
        if missing:
            raise DataIntegrityError(f"{archive}: no member {missing[0]}")
        parts = [found[m] for m in members]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def load_cifar10(
    split: str = "train",
    *,
    dtype: torch.dtype = torch.float32,
    root: str | os.PathLike | None = None,
    download_missing: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The full CIFAR-10 (Krizhevsky 2009) from its python-format release.

    Looks for ``<data root>/cifar10/cifar-10-batches-py/`` (the extracted archive; each
    batch's MD5 is checked), else
    ``<data root>/cifar10/cifar-10-python.tar.gz`` (read in place, not extracted), else
    downloads the archive from https://www.cs.toronto.edu/~kriz/ and checks its MD5 (the
    only checksum published). Missing with downloads off: :class:`DatasetNotFoundError`
    saying what to put where.

    Returns images (N, 3, 32, 32), float ``dtype`` in [0, 1] or uint8 (``dtype=torch.uint8``,
    a quarter of the memory), and labels int64 (N,) indexing :data:`CIFAR10_CLASSES`;
    N = 50,000 for ``"train"``, 10,000 for ``"test"``.

    Safety: the batches are Python pickles; they are read with a numpy-only unpickler
    that refuses any other object (:func:`read_cifar10_batch`), never plain ``pickle.load``.
    """
    v.choice("split", split, ["train", "test"])
    if not (v.dtype("dtype", dtype) == torch.uint8 or dtype.is_floating_point):
        raise ValueError(f"dtype: expected torch.uint8 or a floating dtype, got {dtype}")
    X, y = _cifar10_arrays(split, data_root(root), download_missing)
    X = torch.from_numpy(X)
    if dtype != torch.uint8:
        X = X.to(dtype) / 255.0
    return X, torch.from_numpy(y)


# ----------------------------------------------------------------------------- image folders


def _find_folder(name_or_path: str | os.PathLike, split: str | None, root: str | os.PathLike | None) -> Path:
    folder = v.path("name_or_path", name_or_path)
    if split is not None and not isinstance(split, str):
        raise TypeError(f"split: expected a str such as 'train' or None, got {type(split).__name__}")
    if not folder.is_absolute() and not folder.exists():
        folder = data_root(root) / folder
    if split is not None:
        folder = folder / split
    if folder.is_file():
        raise DatasetNotFoundError(
            f"name_or_path: expected a folder of <class>/ subfolders of images, got the file {folder}"
        )
    if not folder.is_dir():
        raise DatasetNotFoundError(
            f"{folder}: no such folder (expected <class>/ subfolders of images; set CRATE_DATA?)"
        )
    return folder


def _list_images(folder: Path) -> tuple[list[tuple[Path, int]], list[str]]:
    """``([(path, label), ...], classes)``: classes sorted by name, files sorted within each.
    A folder without class subfolders, or whose class subfolders hold no image files, is a
    :class:`DatasetNotFoundError` (an empty data set would only fail later, obscurely)."""
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not classes:
        raise DatasetNotFoundError(f"{folder}: no class subfolders (the folder is empty of <class>/ folders)")
    samples = [
        (path, label)
        for label, cls in enumerate(classes)
        for path in sorted((folder / cls).iterdir())
        if path.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not samples:
        raise DatasetNotFoundError(
            f"{folder}: no images (files ending {', '.join(IMAGE_SUFFIXES)}) in its class folders {classes}"
        )
    return samples, classes


def _read_image(path: Path) -> np.ndarray:
    """Pixels uint8 (H, W) or (H, W, C) of one image file."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im)
    except OSError as err:
        raise DataIntegrityError(f"{path}: cannot decode image ({err})") from err


def load_image_folder(
    name_or_path: str | os.PathLike, split: str | None = None, *, root: str | os.PathLike | None = None
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Images in the one-folder-per-class layout ``<folder>[/<split>]/<class>/*.png|jpg``.

    ``name_or_path`` is a folder name under the data root (e.g. ``"cifar10-jpeg-subset"``)
    or a path. Returns images float32 (N, C, H, W) in [0, 1], labels int64 (N,) indexing
    the sorted class names, and those names. All images must share one size and mode.
    """
    folder = _find_folder(name_or_path, split, root)
    samples, classes = _list_images(folder)
    images, labels = [], []
    for path, label in samples:
        arr = _read_image(path)
        if images and arr.shape != images[0].shape:
            raise DataIntegrityError(f"{path}: shape {arr.shape} differs from {images[0].shape}")
        images.append(arr)
        labels.append(label)
    X = torch.from_numpy(np.stack(images).astype(np.float32) / 255.0)
    X = X.unsqueeze(1) if X.ndim == 3 else X.permute(0, 3, 1, 2)  # (N, C, H, W)
    return X.contiguous(), torch.tensor(labels, dtype=torch.int64), classes


class ImageFolder(torch.utils.data.Dataset):
    """Map-style data set over ``<folder>[/<split>]/<class>/*.png|jpg``, one file per item.

    ``dataset[i]`` is ``(image float32 (C, H, W) in [0, 1], label int64 ())``, decoded from
    disk on each access (so a ``DataLoader`` with workers decodes in parallel and nothing
    large is held in memory). Items are ordered by class name, then file name; ``classes``
    holds the sorted class names, ``samples`` the ``(path, label)`` pairs, ``targets`` the
    labels int64 (N,). Use :func:`load_image_folder` instead for a small set that fits in
    memory as one tensor.
    """

    def __init__(
        self, name_or_path: str | os.PathLike, split: str | None = None, *, root: str | os.PathLike | None = None
    ):
        self.folder = _find_folder(name_or_path, split, root)
        self.samples, self.classes = _list_images(self.folder)
        self.targets = torch.tensor([label for _, label in self.samples], dtype=torch.int64)  # (N,)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not -len(self) <= int(i) < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} images in {self.folder}")
        path, label = self.samples[i]
        arr = _read_image(path)
        x = torch.from_numpy(arr.astype(np.float32) / 255.0)
        x = x.unsqueeze(0) if x.ndim == 2 else x.permute(2, 0, 1)  # (C, H, W)
        return x.contiguous(), self.targets[i]


# ----------------------------------------------------------------------------- the chapters' splits

Split = tuple[torch.Tensor, torch.Tensor]


def _random_split(X: torch.Tensor, y: torch.Tensor, n_train: int, g: torch.Generator) -> tuple[Split, Split]:
    perm = torch.randperm(len(X), generator=g)
    tr, te = perm[:n_train], perm[n_train:]
    return (X[tr], y[tr]), (X[te], y[te])


def load_classification(name: str, *, seed: int = 0) -> tuple[Split, Split, str]:
    """``(train, test, description)`` for ``"digits"``, ``"mnist"`` or ``"cifar10"``.

    Images (N, C, H, W) float32 in [0, 1], labels int64 (N,). Random splits draw from a
    generator seeded ``seed``: a data split is a recipe whose seed the description records
    (CONTRIBUTING, "Names": functions that draw a stream take ``generator=``; a seed is kept
    where the number itself is recorded).

    - ``digits``: scikit-learn's 8x8 digits (N, 1, 8, 8), split 1437 / 360 at random.
    - ``mnist``: the official 60,000 / 10,000 split when the training files are in the
      data root; otherwise the 10,000 test images split 8,000 train / 2,000 test at random.
    - ``cifar10``: the official 50,000 / 10,000 split when the full CIFAR-10 is in the
      data root (never downloaded from here); otherwise the local JPEG subset
      ``cifar10-jpeg-subset`` (10,000 train / 2,000 test, JPEG re-encoded).

    The description says plainly which of these was used.
    """
    v.choice("name", name, ["digits", "mnist", "cifar10"])
    label = f"seed {v.seed('seed', seed)}"
    g = torch.Generator().manual_seed(seed)
    if name == "digits":
        X, y = load_digits()
        X = X.view(-1, 1, 8, 8)  # (1797, 64) -> (1797, 1, 8, 8), row-major pixels
        return (*_random_split(X, y, 1437, g), f"sklearn digits 8x8, random 1437/360 split ({label})")
    if name == "mnist":
        try:
            train = load_mnist("train", download_missing=False)  # only if already downloaded
            return train, load_mnist("test"), "MNIST, official 60,000/10,000 split"
        except DatasetNotFoundError:
            X, y = load_mnist("test")
            return (
                *_random_split(X, y, 8000, g),
                "MNIST test set only (training set absent): 10,000 test images split 8,000 train / 2,000 test, "
                f"{label}",
            )
    try:
        train = load_cifar10("train", download_missing=False)
        return train, load_cifar10("test", download_missing=False), "CIFAR-10, official 50,000/10,000 split"
    except DatasetNotFoundError:
        train, test = (
            load_image_folder("cifar10-jpeg-subset", "train"),
            load_image_folder("cifar10-jpeg-subset", "test"),
        )
        return (
            train[:2],
            test[:2],
            "CIFAR-10 JPEG subset (full CIFAR-10 absent): 10,000 train / 2,000 test images, 1,000 / 200 per class, "
            "JPEG re-encoded (accuracies differ slightly from the binary release)",
        )
