"""Where data files come from: the data root, the manifest, checksums, verified downloads.

Order of search (``datasets/README.md``): an explicit ``root``, else ``$CRATE_DATA``
(default: the checkout's ``datasets/`` folder); if a registered file is missing there, a
verified download from the manifest's mirrors (unless ``CRATE_OFFLINE`` or ``CI`` is true:
booleans, ``1/true/yes/on`` or ``0/false/no/off``; ``CRATE_OFFLINE=0`` allows downloads).

Checksums: every file in ``datasets/manifest.json`` carries a SHA-256, except where the
publisher gives only an MD5 (CIFAR-10's python archive): then the MD5 is verified. MD5 is
no defence against a deliberate forgery; it does catch truncated or corrupt downloads.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from .. import _validate as v
from .. import utils

PROJECT_ROOT = utils.project_root()
MANIFEST_PATH = PROJECT_ROOT / "datasets" / "manifest.json"
ALGORITHMS = ("sha256", "md5")


class DatasetNotFoundError(FileNotFoundError):
    """A data file is missing and could not be downloaded; the message says what to do."""


class DataIntegrityError(ValueError):
    """A data file is corrupt, truncated or fails its checksum; the message names the file."""


def data_root(root: str | os.PathLike | None = None) -> Path:
    """``root`` if given, else ``$CRATE_DATA``, else the checkout's ``datasets/`` folder.

    The root need not exist yet (a download creates it), but if it exists it must be a
    folder: a file is refused with :class:`DatasetNotFoundError` naming ``root`` or
    ``CRATE_DATA``, rather than failing later inside a download."""
    if root is not None:
        name, folder = "root", v.path("root", root)
    elif os.environ.get("CRATE_DATA"):
        name, folder = "CRATE_DATA", Path(os.environ["CRATE_DATA"])
    else:
        name, folder = "data root", PROJECT_ROOT / "datasets"
    if folder.exists() and not folder.is_dir():
        raise DatasetNotFoundError(f"{name}: expected a folder of data sets, got the file {folder}")
    return folder


def downloads_allowed() -> bool:
    """Whether :func:`fetch` may download: not when ``CRATE_OFFLINE`` is true, nor when ``CI``
    is (tests and CI never use the network).

    Both are booleans: ``1/true/yes/on`` or ``0/false/no/off`` (empty or unset: false), so
    ``CRATE_OFFLINE=0`` allows downloads. Any other value of ``CRATE_OFFLINE`` is a
    ``ValueError``; ``CI`` is set by other tools, so any other value of it counts as true.
    """
    offline = v.env_flag("CRATE_OFFLINE", os.environ.get("CRATE_OFFLINE"))
    ci = v.env_flag("CI", os.environ.get("CI"), strict=False)
    return not (offline or ci)


def manifest() -> dict:
    """The registry in ``datasets/manifest.json``: folder, files (SHA-256 or MD5), mirrors."""
    with open(MANIFEST_PATH) as f:
        return {k: val for k, val in json.load(f).items() if not k.startswith("_")}


def digest_of(path: Path, algorithm: str = "sha256", *, gunzip: bool = False) -> str:
    """Hex digest (``"sha256"`` or ``"md5"``) of a file's bytes, or of its decompressed
    content when ``gunzip``."""
    v.choice("algorithm", algorithm, ALGORITHMS)
    h = hashlib.new(algorithm)
    try:
        with gzip.open(path, "rb") if gunzip else open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except (OSError, EOFError) as err:  # gzip raises these on truncated or corrupt input
        raise DataIntegrityError(f"{path}: cannot read ({err}); delete it and download it again") from err
    return h.hexdigest()


def sha256_of(path: Path, *, gunzip: bool = False) -> str:
    """SHA-256 of a file's bytes, or of its decompressed content when ``gunzip``."""
    return digest_of(path, "sha256", gunzip=gunzip)


def md5_of(path: Path) -> str:
    """MD5 of a file's bytes (only for files whose publisher gives nothing stronger)."""
    return digest_of(path, "md5")


def _expected(sha256: str | None, md5: str | None) -> tuple[str, str]:
    """``(algorithm, hex digest)`` to check: SHA-256 when known, else MD5."""
    if sha256:
        return "sha256", sha256
    if md5:
        return "md5", md5
    raise ValueError("sha256/md5: expected at least one checksum, got neither")


def verify(path: Path, sha256: str | None = None, *, md5: str | None = None, gunzip: bool = False) -> None:
    """Raise :class:`DataIntegrityError` naming ``path`` unless its checksum matches.

    SHA-256 is checked when given, else ``md5`` (one of them is required).
    """
    algorithm, want = _expected(sha256, md5)
    got = digest_of(path, algorithm, gunzip=gunzip)
    if got != want.lower():
        raise DataIntegrityError(f"{path}: {algorithm.upper()} {got} does not match the expected {want}")


def download(
    url: str,
    dest: Path,
    sha256: str | None = None,
    *,
    md5: str | None = None,
    gunzip: bool = False,
    timeout: float = 30.0,
    deadline: float = 3600.0,
) -> Path:
    """Download ``url`` to ``dest``, resumably and atomically, and verify its checksum.

    Bytes go to ``dest.part``; an interrupted download resumes from there (HTTP Range)
    when the server allows it, else starts over. Only a verified file (SHA-256, or MD5
    where that is all the publisher gives) is renamed to ``dest``; a file that fails its
    checksum is deleted and the error names it.

    ``timeout`` (seconds) bounds each network operation (connecting, each read); ``deadline``
    (seconds) bounds the whole download, so a server that trickles bytes just fast enough
    to beat the per-read timeout cannot keep it alive forever: past the deadline it stops
    (within one more ``timeout``) with :class:`DatasetNotFoundError`, keeping ``dest.part``
    for a later resume.
    """
    _expected(sha256, md5)  # refuse to download what cannot be checked
    if not isinstance(url, str):
        raise TypeError(f"url: expected a str, got {type(url).__name__}")
    if urllib.parse.urlsplit(url).scheme not in ("http", "https", "ftp", "file"):
        raise ValueError(f"url: expected an http(s), ftp or file URL, got {url!r}")
    timeout = v.positive("timeout", timeout)
    deadline = v.positive("deadline", deadline)
    dest = v.path("dest", dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DatasetNotFoundError(f"dest: cannot create the folder of {dest} ({err})") from err
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    stop_at = time.monotonic() + deadline
    try:
        with urllib.request.urlopen(request, timeout=min(timeout, deadline)) as response:
            mode = "ab" if have and response.status == 206 else "wb"
            with open(part, mode) as f:
                # read1: whatever has arrived (one socket read), so the deadline is checked
                # between reads even when bytes trickle in (read(n) would wait for all n)
                for block in iter(lambda: response.read1(1 << 20), b""):
                    f.write(block)
                    if time.monotonic() > stop_at:
                        raise DatasetNotFoundError(
                            f"{url}: download to {dest} passed its deadline of {deadline:g} s "
                            f"(the server is too slow); {part} keeps what arrived, call again to resume"
                        )
    except urllib.error.HTTPError as err:
        if not (err.code == 416 and have):  # 416 with a .part file: it is already complete
            raise DatasetNotFoundError(f"{url}: HTTP {err.code} while downloading to {dest}") from err
    except DatasetNotFoundError:  # the deadline (an OSError too): already says what happened
        raise
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        raise DatasetNotFoundError(f"{url}: download to {dest} failed ({err}); {part} keeps what arrived") from err
    try:
        verify(part, sha256, md5=md5, gunzip=gunzip)
    except DataIntegrityError as err:
        part.unlink(missing_ok=True)
        raise DataIntegrityError(f"{dest.name} downloaded from {url} is corrupt: {err}") from err
    os.replace(part, dest)
    return dest


def fetch(
    name: str, filename: str, *, root: str | os.PathLike | None = None, download_missing: bool | None = None
) -> Path:
    """Path of a verified registry file ``name``/``filename``, downloading it if needed.

    ``download_missing``: None follows :func:`downloads_allowed`; False never downloads.
    """
    if download_missing is not None:
        v.flag("download_missing", download_missing)
    registry = manifest()
    v.choice("name", name, list(registry))
    entry = registry[name]
    v.choice("filename", filename, list(entry["files"]))
    meta = entry["files"][filename]
    sums = {"sha256": meta.get("sha256"), "md5": meta.get("md5"), "gunzip": meta.get("gzip", False)}
    path = data_root(root) / entry["folder"] / filename
    if path.exists():
        verify(path, **sums)
        return path
    allowed = downloads_allowed() if download_missing is None else download_missing
    errors = []
    if allowed:
        for mirror in entry["mirrors"]:
            try:
                return download(mirror + filename, path, **sums)
            except (DatasetNotFoundError, DataIntegrityError) as err:
                errors.append(str(err))
    why = "; ".join(errors) if errors else "downloads are off (CRATE_OFFLINE or CI is true, or download_missing=False)"
    raise DatasetNotFoundError(
        f"{path} is missing and could not be downloaded ({why}). Download {entry['mirrors'][0] + filename} "
        f"and put it at {path}, or set CRATE_DATA to a folder that holds {entry['folder']}/{filename}."
    )
