"""scripts/train.py: --help works, bad flags are refused before any data is loaded with an
argparse message naming the flag, and a resume conflict names the flag that resolves it."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--data", "digits", "--dim", "16", "--depth", "1", "--heads", "2", "--steps", "3", "--batch-size", "16",
        "--warmup", "1", "--threads", "1", "--no-progress"]  # fmt: skip


@pytest.fixture(scope="module")
def main():
    return runpy.run_path(str(ROOT / "scripts" / "train.py"))["main"]


def test_help(main, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0 and "--accum-steps" in capsys.readouterr().out


@pytest.mark.parametrize("args, flag", [
    (["--heads", "0"], "--heads"), (["--dim", "0"], "--dim"), (["--threads", "0"], "--threads"),
    (["--heads", "3"], "--heads"), (["--steps", "-1"], "--steps"), (["--lr", "0"], "--lr"),
    (["--lr", "nan"], "--lr"), (["--batch-size", "two"], "--batch-size"), (["--ema-decay", "1"], "--ema-decay"),
    (["--patch", "3", "--data", "digits"], "--patch"), (["--batch-size", "10", "--accum-steps", "4"], "--batch-size"),
    (["--label-smoothing", "-0.1"], "--label-smoothing"),
])  # fmt: skip
def test_bad_flags_are_refused_before_loading_data(main, capsys, monkeypatch, args, flag):
    monkeypatch.setattr("crate_lite.data.load_classification", lambda *a, **k: pytest.fail("data was loaded"))
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2 and flag in capsys.readouterr().err


def test_checkpoint_directory_refused_and_resume_conflict_names_the_flag(main, capsys, tmp_path):
    with pytest.raises(SystemExit):
        main([*TINY, "--checkpoint", str(tmp_path)])
    assert "--checkpoint" in capsys.readouterr().err
    ckpt = str(tmp_path / "c.pt")
    assert main([*TINY, "--checkpoint", ckpt]) == 0
    with pytest.raises(SystemExit):
        main([*TINY, "--checkpoint", ckpt, "--lr", "0.01"])
    assert "--no-resume" in capsys.readouterr().err
    assert main([*TINY, "--checkpoint", ckpt, "--lr", "0.01", "--no-resume", "--out", str(tmp_path / "o.json")]) == 0
    assert json.loads((tmp_path / "o.json").read_text())["config"]["lr"] == 0.01
