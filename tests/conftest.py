"""Shared fixtures: the test data root and a marker for tests that need it."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "datasets"


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """No test may reach the network: downloads are off unless a test turns them on."""
    monkeypatch.setenv("CRATE_OFFLINE", "1")


@pytest.fixture
def shared_data(monkeypatch) -> Path:
    """The shared test data root (``$CRATE_DATA`` or ``../shared/datasets``); skips if absent."""
    root = Path(os.environ.get("CRATE_DATA") or SHARED)
    if not (root / "mnist").is_dir():
        pytest.skip(f"shared test data not found at {root} (set CRATE_DATA)")
    monkeypatch.setenv("CRATE_DATA", str(root))
    return root
