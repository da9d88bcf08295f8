"""Shared fixtures: the test data root and a marker for tests that need it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """No test may reach the network: downloads are off unless a test turns them on."""
    monkeypatch.setenv("CRATE_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread per test: the tests' matrices and models are tiny, and on a 2-core
    machine a second thread costs more in synchronisation than it saves (up to ~50x slower
    when the cores are shared, measured). Restored afterwards."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def shared_data(monkeypatch) -> Path:
    """The test data root ``$CRATE_DATA`` (``make test`` and ``.ci/run`` set it to the
    test-data folder beside the checkout when that exists); skips if it holds no MNIST."""
    root = Path(os.environ.get("CRATE_DATA") or ROOT / "datasets")
    if not (root / "mnist").is_dir():
        pytest.skip(f"test data not found at {root} (set CRATE_DATA to a folder holding mnist/)")
    monkeypatch.setenv("CRATE_DATA", str(root))
    return root
