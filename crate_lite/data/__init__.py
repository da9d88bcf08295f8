"""The data layer: registry and verified downloads, loaders, Datasets, augmentation.

``from crate_lite import data`` gives every public name below; the modules are

- :mod:`.registry`: data root (``root=`` / ``$CRATE_DATA`` / ``datasets/``), manifest,
  SHA-256 / MD5 checks, resumable atomic downloads, :func:`fetch`;
- :mod:`.images`: MNIST, CIFAR-10, image folders (tensors or a Dataset),
  :func:`load_classification`;
- :mod:`.text`: a character-level corpus, its vocabulary and windows;
- :mod:`.synthetic`: embedded and generated sets (digits, mixtures, shapes with masks);
- :mod:`.augment`: batch augmentation on the batch's device from one CPU generator.

All loaders return torch tensors: images float32 in [0, 1], channels first; labels int64.
"""

from .augment import Augment, compose, crop, hflip, random_crop, random_hflip, random_shift
from .images import (
    CIFAR10_CLASSES,
    IMAGE_SUFFIXES,
    ImageFolder,
    load_cifar10,
    load_classification,
    load_image_folder,
    load_mnist,
    read_cifar10_batch,
)
from .registry import (
    MANIFEST_PATH,
    PROJECT_ROOT,
    DataIntegrityError,
    DatasetNotFoundError,
    data_root,
    digest_of,
    download,
    downloads_allowed,
    fetch,
    manifest,
    md5_of,
    sha256_of,
    verify,
)
from .synthetic import SHAPES, gaussians_on_sphere, load_digits, subspace_mixture, synthetic_shapes
from .text import CharDataset, CharVocab, load_char_dataset, load_text, random_windows

__all__ = [
    "Augment",
    "CIFAR10_CLASSES",
    "CharDataset",
    "CharVocab",
    "DataIntegrityError",
    "DatasetNotFoundError",
    "IMAGE_SUFFIXES",
    "ImageFolder",
    "MANIFEST_PATH",
    "PROJECT_ROOT",
    "SHAPES",
    "compose",
    "crop",
    "data_root",
    "digest_of",
    "download",
    "downloads_allowed",
    "fetch",
    "gaussians_on_sphere",
    "hflip",
    "load_char_dataset",
    "load_cifar10",
    "load_classification",
    "load_digits",
    "load_image_folder",
    "load_mnist",
    "load_text",
    "manifest",
    "md5_of",
    "random_crop",
    "random_hflip",
    "random_shift",
    "random_windows",
    "read_cifar10_batch",
    "sha256_of",
    "subspace_mixture",
    "synthetic_shapes",
    "verify",
]
