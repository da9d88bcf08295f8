"""CIFAR-10: python batches read with a numpy-only unpickler, the archive, MD5, fallbacks."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile

import numpy as np
import pytest
import torch

from crate_lite import data


def _fake_batch(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "batch_label": "fake",
        "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        "labels": rng.integers(0, 10, n).tolist(),
    }


def _write_batch(path, batch, protocol=2):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(batch, protocol=protocol))


@pytest.mark.parametrize("protocol", [2, 5])
def test_read_batch_layout(tmp_path, protocol):
    batch = _fake_batch(4, 0)
    _write_batch(tmp_path / "data_batch_1", batch, protocol)
    X, y = data.read_cifar10_batch(tmp_path / "data_batch_1")
    assert X.shape == (4, 3, 32, 32) and X.dtype == np.uint8
    assert y.dtype == np.int64 and y.tolist() == batch["labels"]
    # row layout: 1024 red values, then green, then blue, each row-major 32x32
    assert X[1, 0, 0, 1] == batch["data"][1, 1] and X[1, 1, 0, 0] == batch["data"][1, 1024]
    assert X[2, 2, 31, 31] == batch["data"][2, 3071]


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_read_batch_refuses_code_in_a_pickle(tmp_path):
    _write_batch(tmp_path / "evil", {"data": _Evil(), "labels": []})
    with pytest.raises(data.DataIntegrityError, match="not allowed"):
        data.read_cifar10_batch(tmp_path / "evil")
    _write_batch(tmp_path / "wrong", {"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]})
    with pytest.raises(data.DataIntegrityError, match="3072"):
        data.read_cifar10_batch(tmp_path / "wrong")


def _fake_registry(monkeypatch, archive_md5="0" * 32, batches=None):
    extracted = {f"cifar-10-batches-py/{b}": {"md5": (batches or {}).get(b, "0" * 32)} for b in _ALL}
    reg = {
        "cifar10": {
            "folder": "cifar10",
            "description": "fake (MD5 only)",
            "files": {"cifar-10-python.tar.gz": {"gzip": False, "md5": archive_md5}},
            "extracted": extracted,
            "mirrors": ["http://127.0.0.1:9/"],
        }
    }
    monkeypatch.setattr(data.registry, "manifest", lambda: reg)


_ALL = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def test_load_from_extracted_folder_checks_md5(tmp_path, monkeypatch):
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    sums = {}
    for i, b in enumerate(_ALL):
        _write_batch(folder / b, _fake_batch(3, i))
        sums[b] = hashlib.md5((folder / b).read_bytes()).hexdigest()
    _fake_registry(monkeypatch, batches=sums)
    X, y = data.load_cifar10("train", root=tmp_path)
    assert X.shape == (15, 3, 32, 32) and X.dtype == torch.float32 and y.dtype == torch.int64
    assert 0 <= float(X.min()) and float(X.max()) <= 1
    Xu, _ = data.load_cifar10("test", root=tmp_path, dtype=torch.uint8)
    assert Xu.shape == (3, 3, 32, 32) and Xu.dtype == torch.uint8
    assert torch.equal(Xu[0].flatten(), torch.from_numpy(_fake_batch(3, 5)["data"][0]))
    (folder / "test_batch").write_bytes((folder / "test_batch").read_bytes()[:-10])  # truncated
    with pytest.raises(data.DataIntegrityError, match="test_batch"):
        data.load_cifar10("test", root=tmp_path)


def test_load_from_archive_checks_md5(tmp_path, monkeypatch):
    archive = tmp_path / "cifar10" / "cifar-10-python.tar.gz"
    archive.parent.mkdir(parents=True)
    with tarfile.open(archive, "w:gz") as tar:
        for i, b in enumerate(_ALL):
            raw = pickle.dumps(_fake_batch(2, i), protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{b}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    _fake_registry(monkeypatch, archive_md5=hashlib.md5(archive.read_bytes()).hexdigest())
    X, y = data.load_cifar10("train", root=tmp_path)
    assert X.shape == (10, 3, 32, 32) and y.tolist()[:2] == _fake_batch(2, 0)["labels"]
    _fake_registry(monkeypatch, archive_md5="f" * 32)  # the archive no longer matches
    with pytest.raises(data.DataIntegrityError, match="MD5"):
        data.load_cifar10("test", root=tmp_path)


def test_missing_offline_says_what_to_do(tmp_path):
    with pytest.raises(data.DatasetNotFoundError) as err:
        data.load_cifar10("test", root=tmp_path)
    msg = str(err.value)
    assert "cifar-10-python.tar.gz" in msg and "CRATE_DATA" in msg and "https://www.cs.toronto.edu/~kriz/" in msg


def test_manifest_entry_is_md5_of_the_canonical_archive():
    entry = data.manifest()["cifar10"]
    assert entry["files"]["cifar-10-python.tar.gz"]["md5"] == "c58f30108f718f92721af3b95e74349a"
    assert entry["mirrors"] == ["https://www.cs.toronto.edu/~kriz/"]
    assert sorted(entry["extracted"]) == sorted(f"cifar-10-batches-py/{b}" for b in _ALL)


@pytest.mark.parametrize(
    "call, word",
    [
        (lambda: data.load_cifar10("val"), "split"),
        (lambda: data.load_cifar10("test", dtype=torch.int32), "dtype"),
    ],
)
def test_bad_input(call, word):
    with pytest.raises(ValueError, match=word):
        call()
