"""The data registry: real data sets with checksums, and embedded sets that need no download.

Where data comes from (COURSE.md section 9, ``datasets/README.md``): an explicit ``root``,
else ``$CRATE_DATA`` (default: the checkout's ``datasets/`` folder); if a registered file
is missing, a verified download (unless ``CRATE_OFFLINE`` or ``CI`` is set); embedded sets
(digits, synthetic mixtures) need neither. All loaders return torch tensors:
images float32 in [0, 1], channels first; labels int64.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import torch

from . import _validate as v

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MANIFEST_PATH = PROJECT_ROOT / "datasets" / "manifest.json"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


class DatasetNotFoundError(FileNotFoundError):
    """A data file is missing and could not be downloaded; the message says what to do."""


class DataIntegrityError(ValueError):
    """A data file is corrupt, truncated or fails its checksum; the message names the file."""


def data_root(root: str | os.PathLike | None = None) -> Path:
    """``root`` if given, else ``$CRATE_DATA``, else the checkout's ``datasets/`` folder."""
    if root is not None:
        return Path(root)
    return Path(os.environ.get("CRATE_DATA") or PROJECT_ROOT / "datasets")


def downloads_allowed() -> bool:
    """False when ``CRATE_OFFLINE`` or ``CI`` is set (tests and CI never use the network)."""
    return not (os.environ.get("CRATE_OFFLINE") or os.environ.get("CI"))


def manifest() -> dict:
    """The registry in ``datasets/manifest.json``: folder, files (SHA-256), mirrors."""
    with open(MANIFEST_PATH) as f:
        return {k: val for k, val in json.load(f).items() if not k.startswith("_")}


def sha256_of(path: Path, *, gunzip: bool = False) -> str:
    """SHA-256 of a file's bytes, or of its decompressed content when ``gunzip``."""
    h = hashlib.sha256()
    try:
        with (gzip.open(path, "rb") if gunzip else open(path, "rb")) as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except (OSError, EOFError) as err:  # gzip raises these on truncated or corrupt input
        raise DataIntegrityError(f"{path}: cannot read ({err}); delete it and download it again") from err
    return h.hexdigest()


def verify(path: Path, sha256: str, *, gunzip: bool = False) -> None:
    """Raise :class:`DataIntegrityError` naming ``path`` unless its checksum is ``sha256``."""
    got = sha256_of(path, gunzip=gunzip)
    if got != sha256:
        raise DataIntegrityError(f"{path}: SHA-256 {got} does not match the expected {sha256}")


def download(url: str, dest: Path, sha256: str, *, gunzip: bool = False, timeout: float = 30.0) -> Path:
    """Download ``url`` to ``dest``, resumably and atomically, and verify its SHA-256.

    Bytes go to ``dest.part``; an interrupted download resumes from there (HTTP Range)
    when the server allows it, else starts over. Only a verified file is renamed to
    ``dest``; a file that fails its checksum is deleted and the error names it.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            mode = "ab" if have and response.status == 206 else "wb"
            with open(part, mode) as f:
                for block in iter(lambda: response.read(1 << 20), b""):
                    f.write(block)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # the .part file is already complete
            pass
        else:
            raise DatasetNotFoundError(f"{url}: HTTP {err.code} while downloading to {dest}") from err
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        raise DatasetNotFoundError(f"{url}: download to {dest} failed ({err}); {part} keeps what arrived") from err
    try:
        verify(part, sha256, gunzip=gunzip)
    except DataIntegrityError as err:
        part.unlink(missing_ok=True)
        raise DataIntegrityError(f"{dest.name} downloaded from {url} is corrupt: {err}") from err
    os.replace(part, dest)
    return dest


def fetch(name: str, filename: str, *, root: str | os.PathLike | None = None, download_missing: bool | None = None) -> Path:
    """Path of a verified registry file ``name``/``filename``, downloading it if needed."""
    registry = manifest()
    v.choice("name", name, list(registry))
    entry = registry[name]
    v.choice("filename", filename, list(entry["files"]))
    meta = entry["files"][filename]
    path = data_root(root) / entry["folder"] / filename
    if path.exists():
        verify(path, meta["sha256"], gunzip=meta["gzip"])
        return path
    allowed = downloads_allowed() if download_missing is None else download_missing
    errors = []
    if allowed:
        for mirror in entry["mirrors"]:
            try:
                return download(mirror + filename, path, meta["sha256"], gunzip=meta["gzip"])
            except (DatasetNotFoundError, DataIntegrityError) as err:
                errors.append(str(err))
    why = "; ".join(errors) if errors else "downloads are off (CRATE_OFFLINE or CI is set)"
    raise DatasetNotFoundError(
        f"{path} is missing and could not be downloaded ({why}). Download {entry['mirrors'][0] + filename} "
        f"and put it at {path}, or set CRATE_DATA to a folder that holds {entry['folder']}/{filename}."
    )


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


def load_mnist(split: str = "train", *, root: str | os.PathLike | None = None, download_missing: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
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


def load_text(name: str = "tinyshakespeare", *, root: str | os.PathLike | None = None, download_missing: bool | None = None) -> str:
    """A registered plain-text corpus as one string (Tiny Shakespeare: 1,115,394 characters)."""
    return fetch(name, "input.txt", root=root, download_missing=download_missing).read_text(encoding="utf-8")


def load_image_folder(name_or_path: str | os.PathLike, split: str | None = None, *, root: str | os.PathLike | None = None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Images in the one-folder-per-class layout ``<folder>[/<split>]/<class>/*.png|jpg``.

    ``name_or_path`` is a folder name under the data root (e.g. ``"cifar10-jpeg-subset"``)
    or a path. Returns images float32 (N, C, H, W) in [0, 1], labels int64 (N,) indexing
    the sorted class names, and those names. All images must share one size and mode.
    """
    from PIL import Image

    folder = Path(name_or_path)
    if not folder.is_absolute() and not folder.exists():
        folder = data_root(root) / folder
    if split is not None:
        folder = folder / split
    if not folder.is_dir():
        raise DatasetNotFoundError(f"{folder}: no such folder (expected <class>/ subfolders of images; set CRATE_DATA?)")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not classes:
        raise DatasetNotFoundError(f"{folder}: no class subfolders")
    images, labels = [], []
    for label, cls in enumerate(classes):
        for path in sorted((folder / cls).iterdir()):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(path) as im:
                    arr = np.asarray(im)
            except OSError as err:
                raise DataIntegrityError(f"{path}: cannot decode image ({err})") from err
            if images and arr.shape != images[0].shape:
                raise DataIntegrityError(f"{path}: shape {arr.shape} differs from {images[0].shape}")
            images.append(arr)
            labels.append(label)
    X = torch.from_numpy(np.stack(images).astype(np.float32) / 255.0)
    X = X.unsqueeze(1) if X.ndim == 3 else X.permute(0, 3, 1, 2)  # (N, C, H, W)
    return X.contiguous(), torch.tensor(labels, dtype=torch.int64), classes


def load_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 8x8 digits (embedded, no download): X float32 (1797, 64) in [0, 1]
    (pixels 0..16 divided by 16, row-major 8x8), y int64 (1797,)."""
    from sklearn.datasets import load_digits as _load

    bunch = _load()
    return torch.tensor(bunch.data / 16.0, dtype=torch.float32), torch.tensor(bunch.target, dtype=torch.int64)


def gaussians_on_sphere(
    n_per_class: int, means: torch.Tensor | int, *, dim: int = 3, noise: float = 0.1, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixture of Gaussians projected onto the unit sphere S^{dim-1}.

    ``means`` is a (K, dim) tensor of class centres or a number K of random unit centres.
    Each point is normalize(mu_k + noise * g), g ~ N(0, I). Returns Z float32 (K n, dim)
    with unit rows and labels int64 (K n,), class by class.
    """
    v.integer("n_per_class", n_per_class, minimum=1)
    v.positive("noise", noise, allow_zero=True)
    g = torch.Generator().manual_seed(seed)
    if isinstance(means, int):
        v.integer("means", means, minimum=1)
        means = torch.randn(means, v.integer("dim", dim, minimum=1), generator=g)
    means = v.tensor("means", means, ndim=2)
    means = torch.nn.functional.normalize(means.float(), dim=1)
    K, d = means.shape
    Z = means.repeat_interleave(n_per_class, 0) + noise * torch.randn(K * n_per_class, d, generator=g)
    y = torch.arange(K).repeat_interleave(n_per_class)
    return torch.nn.functional.normalize(Z, dim=1), y


def subspace_mixture(
    n_per_class: int, n_classes: int, *, dim: int, sub_dim: int, noise: float = 0.0,
    orthogonal: bool = False, normalize: bool = True, seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Samples near a union of ``n_classes`` linear subspaces of dimension ``sub_dim`` in R^dim.

    Class k has an orthonormal basis U_k (dim, sub_dim), random or (``orthogonal``) mutually
    orthogonal; x = U_k c + noise * g with c, g standard normal, then scaled to unit norm
    when ``normalize``. Returns X float32 (K n, dim), labels int64 (K n,), bases U (K, dim, sub_dim).
    """
    v.integer("n_per_class", n_per_class, minimum=1)
    v.integer("n_classes", n_classes, minimum=1)
    v.integer("sub_dim", sub_dim, minimum=1)
    v.integer("dim", dim, minimum=sub_dim * n_classes if orthogonal else sub_dim)
    v.positive("noise", noise, allow_zero=True)
    g = torch.Generator().manual_seed(seed)
    if orthogonal:
        Q, _ = torch.linalg.qr(torch.randn(dim, n_classes * sub_dim, generator=g))
        U = Q.T.reshape(n_classes, sub_dim, dim).mT  # (K, dim, sub_dim)
    else:
        U, _ = torch.linalg.qr(torch.randn(n_classes, dim, sub_dim, generator=g))  # (K, dim, sub_dim)
    C = torch.randn(n_classes, n_per_class, sub_dim, generator=g)
    X = (C @ U.mT).reshape(-1, dim)  # (K n, dim)
    X = X + noise * torch.randn(X.shape, generator=g)
    if normalize:
        X = torch.nn.functional.normalize(X, dim=1)
    y = torch.arange(n_classes).repeat_interleave(n_per_class)
    return X, y, U
