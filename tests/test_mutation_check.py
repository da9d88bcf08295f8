"""scripts/mutation_check.py on a tiny generated chapter (not a real one): a chapter whose
check compares the package's function with an independent computation must be KILLED when
the function is scaled by 1.001, and must pass unmutated."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHAPTER = """# %% [markdown]
# # Tiny chapter

# %%
import torch
from crate_lite.sparse import soft_threshold

x = torch.tensor([-2.0, -0.5, 0.0, 0.5, 3.0])
by_hand = torch.sign(x) * torch.clamp(x.abs() - 1.0, min=0.0)
assert torch.allclose(soft_threshold(x, 1.0), by_hand, rtol=1e-6, atol=1e-7)
"""


@pytest.fixture(scope="module")
def mc():
    spec = importlib.util.spec_from_file_location("mutation_check", ROOT / "scripts" / "mutation_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def chapter(tmp_path) -> Path:
    p = tmp_path / "99_tiny.py"
    p.write_text(CHAPTER)
    return p


def test_scaled_function_is_killed(mc, chapter, capsys):
    assert mc.main([str(chapter), "sparse.soft_threshold", "scale"]) == 0
    assert "KILLED: cell 1 raised AssertionError" in capsys.readouterr().out


def test_unmutated_chapter_survives_and_list_finds_the_function(mc, chapter, capsys):
    assert mc.main([str(chapter), "sparse.soft_threshold", "none"]) == 1
    assert "SURVIVED (baseline" in capsys.readouterr().out
    assert mc.main([str(chapter), "--list"]) == 0
    assert "sparse.soft_threshold" in capsys.readouterr().out
