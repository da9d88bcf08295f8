"""Image-folder Dataset, load_classification's CIFAR-10 fallback, synthetic shapes with masks."""

from __future__ import annotations

import pytest
import torch

from crate_lite import data


def test_image_folder_dataset_matches_tensors(shared_data):
    ds = data.ImageFolder("cifar10-jpeg-subset", "test")
    assert len(ds) == 2000 and ds.classes[0] == "airplane" and len(ds.classes) == 10
    assert torch.bincount(ds.targets).tolist() == [200] * 10
    X, y, _ = data.load_image_folder("cifar10-jpeg-subset", "test")
    for i in (0, 777, 1999):
        x, label = ds[i]
        assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and label.dtype == torch.int64
        assert torch.equal(x, X[i]) and int(label) == int(y[i])
    xb, yb = next(iter(torch.utils.data.DataLoader(ds, batch_size=8)))
    assert xb.shape == (8, 3, 32, 32) and yb.shape == (8,)


def test_image_folder_dataset_errors(tmp_path):
    with pytest.raises(data.DatasetNotFoundError, match="no such folder"):
        data.ImageFolder(tmp_path / "nothing")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "broken.png").write_bytes(b"not a png")
    ds = data.ImageFolder(tmp_path)
    with pytest.raises(data.DataIntegrityError, match="broken.png"):
        ds[0]


def test_load_classification_cifar10_falls_back_to_subset(shared_data):
    (Xtr, ytr), (Xte, yte), desc = data.load_classification("cifar10")
    assert Xtr.shape == (10_000, 3, 32, 32) and Xte.shape == (2000, 3, 32, 32)
    assert ytr.dtype == torch.int64 and torch.bincount(yte).tolist() == [200] * 10
    assert "JPEG subset" in desc and "full CIFAR-10 absent" in desc


def test_load_classification_digits_seed():
    a = data.load_classification("digits", seed=3)
    b = data.load_classification("digits", seed=3)
    assert torch.equal(a[0][0], b[0][0]) and a[0][0].shape == (1437, 1, 8, 8)
    assert not torch.equal(a[0][0], data.load_classification("digits", seed=4)[0][0])
    assert "seed 3" in a[2]
    with pytest.raises(ValueError, match="name"):
        data.load_classification("cifar100")


def test_synthetic_shapes_masks():
    X, masks, labels = data.synthetic_shapes(64, 32, generator=torch.Generator().manual_seed(0))
    assert X.shape == (64, 3, 32, 32) and X.dtype == torch.float32 and 0 <= float(X.min()) <= float(X.max()) <= 1
    assert masks.shape == (64, 32, 32) and masks.dtype == torch.bool
    assert labels.shape == (64,) and labels.dtype == torch.int64 and set(labels.tolist()) <= {0, 1, 2}
    frac = masks.float().mean((1, 2))
    assert bool((frac > 0.01).all()) and bool((frac < 0.6).all())
    # inside the mask the pixels are flat shape colours; outside, the textured background varies
    again = data.synthetic_shapes(64, 32, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip((X, masks, labels), again))
    disc = X[labels == 0][0], masks[labels == 0][0]
    assert float(disc[0][:, ~disc[1]].std(dim=1).min()) > 0.02  # background is textured


def test_embedded_sets_take_a_generator():
    g = torch.Generator().manual_seed(4)
    Z, _ = data.gaussians_on_sphere(10, 3, generator=g)
    assert torch.equal(Z, data.gaussians_on_sphere(10, 3, generator=torch.Generator().manual_seed(4))[0])
    X, _, _ = data.subspace_mixture(5, 2, dim=6, sub_dim=2, generator=torch.Generator().manual_seed(1))
    assert torch.equal(X, data.subspace_mixture(5, 2, dim=6, sub_dim=2, generator=torch.Generator().manual_seed(1))[0])
    with pytest.raises(TypeError, match="generator"):
        data.gaussians_on_sphere(10, 3, generator=4)
