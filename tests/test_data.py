"""crate_lite.data: registry, checksums, atomic resumable downloads, loaders, bad input."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import socket
import threading

import pytest
import torch

from crate_lite import data


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}

    def do_GET(self):  # noqa: N802 (http.server's name)
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        if "Range" in self.headers:
            start = int(self.headers["Range"].split("=")[1].rstrip("-"))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        self.wfile.write(body[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    payload = b"course data " * 1000
    _RangeHandler.files = {"/good.bin": payload, "/corrupt.bin": payload[:-5] + b"xxxxx"}
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", hashlib.sha256(payload).hexdigest(), payload
    httpd.shutdown()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the socket is


def test_download_good_file(server, tmp_path):
    url, sha, payload = server
    dest = data.download(f"{url}/good.bin", tmp_path / "good.bin", sha)
    assert dest.read_bytes() == payload
    assert not (tmp_path / "good.bin.part").exists()


def test_download_corrupt_file_leaves_nothing_under_final_name(server, tmp_path):
    url, sha, _ = server
    with pytest.raises(data.DataIntegrityError, match="corrupt.bin"):
        data.download(f"{url}/corrupt.bin", tmp_path / "corrupt.bin", sha)
    assert not (tmp_path / "corrupt.bin").exists()
    assert not (tmp_path / "corrupt.bin.part").exists()


def test_download_closed_port_is_a_clear_error(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}/good.bin"
    with pytest.raises(data.DatasetNotFoundError, match="good.bin"):
        data.download(url, tmp_path / "good.bin", "0" * 64, timeout=5)
    assert not (tmp_path / "good.bin").exists()


def test_download_resumes_from_part_file(server, tmp_path):
    url, sha, payload = server
    (tmp_path / "good.bin.part").write_bytes(payload[:5000])  # an interrupted earlier download
    dest = data.download(f"{url}/good.bin", tmp_path / "good.bin", sha)
    assert dest.read_bytes() == payload


def test_download_verifies_md5_when_only_md5_is_published(server, tmp_path):
    url, _, payload = server
    md5 = hashlib.md5(payload).hexdigest()
    dest = data.download(f"{url}/good.bin", tmp_path / "good.bin", md5=md5)
    assert dest.read_bytes() == payload and data.md5_of(dest) == md5
    with pytest.raises(data.DataIntegrityError, match="MD5"):
        data.download(f"{url}/corrupt.bin", tmp_path / "corrupt.bin", md5=md5)
    assert not (tmp_path / "corrupt.bin").exists() and not (tmp_path / "corrupt.bin.part").exists()
    with pytest.raises(ValueError, match="checksum"):
        data.download(f"{url}/good.bin", tmp_path / "unchecked.bin")  # no checksum: refused


def test_fetch_md5_registry_entry(server, tmp_path, monkeypatch):
    url, _, payload = server
    md5 = hashlib.md5(payload).hexdigest()
    reg = {"toy": {"folder": "toy", "files": {"good.bin": {"gzip": False, "md5": md5}}, "mirrors": [url + "/"]}}
    monkeypatch.setattr(data.registry, "manifest", lambda: reg)
    path = data.fetch("toy", "good.bin", root=tmp_path, download_missing=True)
    assert path.read_bytes() == payload
    path.write_bytes(b"tampered")
    with pytest.raises(data.DataIntegrityError, match="MD5"):
        data.fetch("toy", "good.bin", root=tmp_path)


def test_missing_file_offline_says_what_to_do(tmp_path):
    with pytest.raises(data.DatasetNotFoundError) as err:
        data.load_mnist("test", root=tmp_path)
    msg = str(err.value)
    assert "t10k-images-idx3-ubyte.gz" in msg and "CRATE_DATA" in msg and "http" in msg


def test_fetch_uses_registry_and_verifies(server, tmp_path, monkeypatch):
    url, sha, payload = server
    reg = {"toy": {"folder": "toy", "files": {"good.bin": {"gzip": False, "sha256": sha}}, "mirrors": [url + "/"]}}
    monkeypatch.setattr(data.registry, "manifest", lambda: reg)
    path = data.fetch("toy", "good.bin", root=tmp_path, download_missing=True)
    assert path == tmp_path / "toy" / "good.bin" and path.read_bytes() == payload
    path.write_bytes(b"tampered")
    with pytest.raises(data.DataIntegrityError, match="good.bin"):
        data.fetch("toy", "good.bin", root=tmp_path)


def test_manifest_lists_a_checksum_for_every_file():
    """SHA-256 everywhere, except an MD5 where that is all the publisher gives (CIFAR-10)."""
    for name, entry in data.manifest().items():
        assert entry["mirrors"], name
        for fname, meta in entry["files"].items():
            if "sha256" in meta:
                assert len(meta["sha256"]) == 64, (name, fname)
            else:
                assert len(meta["md5"]) == 32 and "MD5" in entry["description"], (name, fname)


def test_load_mnist_test_split(shared_data):
    X, y = data.load_mnist("test")
    assert X.shape == (10_000, 1, 28, 28) and X.dtype == torch.float32
    assert y.shape == (10_000,) and y.dtype == torch.int64
    assert 0.0 <= float(X.min()) and float(X.max()) <= 1.0
    counts = torch.bincount(y).tolist()
    assert counts == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_truncated_idx_file_names_the_file(shared_data, tmp_path):
    src = shared_data / "mnist" / "t10k-labels-idx1-ubyte.gz"
    raw = gzip.decompress(src.read_bytes())
    bad = tmp_path / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(gzip.compress(raw[:-100]))
    with pytest.raises(data.DataIntegrityError, match="t10k-labels-idx1-ubyte.gz"):
        data.images._read_idx(bad, 0x801, ())
    bad.write_bytes(src.read_bytes()[:2000])  # truncated gzip stream
    with pytest.raises(data.DataIntegrityError, match="t10k-labels-idx1-ubyte.gz"):
        data.sha256_of(bad, gunzip=True)


def test_load_text(shared_data):
    text = data.load_text("tinyshakespeare")
    assert len(text) == 1_115_394 and len(set(text)) == 65


def test_load_image_folder(shared_data):
    X, y, classes = data.load_image_folder("cifar10-jpeg-subset", "test")
    assert X.shape == (2000, 3, 32, 32) and X.dtype == torch.float32
    assert classes[0] == "airplane" and len(classes) == 10
    assert torch.bincount(y).tolist() == [200] * 10


def test_image_folder_errors(tmp_path):
    with pytest.raises(data.DatasetNotFoundError, match="no such folder"):
        data.load_image_folder(tmp_path / "nothing")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(data.DataIntegrityError, match="broken.png"):
        data.load_image_folder(tmp_path)


def test_digits():
    X, y = data.load_digits()
    assert X.shape == (1797, 64) and X.dtype == torch.float32 and y.dtype == torch.int64
    assert float(X.max()) == 1.0 and float(X.min()) == 0.0


def test_synthetic_sets():
    Z, y = data.gaussians_on_sphere(50, 3, noise=0.1, generator=torch.Generator().manual_seed(1))
    assert Z.shape == (150, 3) and torch.allclose(Z.norm(dim=1), torch.ones(150))
    assert torch.equal(torch.bincount(y), torch.tensor([50, 50, 50]))
    X, y, U = data.subspace_mixture(20, 3, dim=10, sub_dim=2, orthogonal=True)
    assert X.shape == (60, 10) and U.shape == (3, 10, 2)
    gram = torch.einsum("kdp,ldq->klpq", U, U)  # (K, K, p, p)
    assert torch.allclose(gram[0, 1], torch.zeros(2, 2), atol=1e-6)
    # noise-free samples lie in their class subspace
    r = X[:20] - X[:20] @ U[0] @ U[0].T
    assert float(r.abs().max()) < 1e-5


@pytest.mark.parametrize(
    "call, exc, word",
    [
        (lambda: data.load_mnist("validation"), ValueError, "split"),
        (lambda: data.gaussians_on_sphere(0, 3), ValueError, "n_per_class"),
        (lambda: data.gaussians_on_sphere(5, 3, noise=-1.0), ValueError, "noise"),
        (lambda: data.gaussians_on_sphere(5, torch.ones(3)), ValueError, "means"),
        (lambda: data.subspace_mixture(5, 3, dim=4, sub_dim=2, orthogonal=True), ValueError, "dim"),
        (lambda: data.fetch("nope", "x"), ValueError, "name"),
    ],
)
def test_bad_input(call, exc, word):
    with pytest.raises(exc, match=word):
        call()
