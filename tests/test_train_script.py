"""scripts/train.py: --help works, bad flags are refused before any data is loaded with an
argparse message naming the flag, a resume conflict names the flag that resolves it, and every
registered model (image classifiers, chapter 10's language models) trains through the CLI."""

from __future__ import annotations

import json
import math
import runpy
import subprocess
import sys
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


# ----------------------------------------------------------------------------- --help, --config, new flags


@pytest.fixture(scope="module")
def script():
    return runpy.run_path(str(ROOT / "scripts" / "train.py"))


def test_help_documents_every_flag_and_every_registered_model_and_data_set(script, capsys):
    with pytest.raises(SystemExit):
        script["main"](["--help"])
    out = capsys.readouterr().out
    for action in script["parser"]()._actions:
        assert action.help, f"{action.option_strings} has no help text"
        for flag in action.option_strings:
            assert flag in out, f"{flag} missing from --help"
    for name in [*script["MODELS"], *script["DATASETS"]]:
        assert f"\n  {name} " in out, f"{name} missing from the lists in --help"


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "run.toml"
    path.write_text(text)
    return str(path)


def test_config_file_sets_flags_and_the_command_line_overrides_it(script, tmp_path):
    cfg = _write(tmp_path, 'model = "vit"\ndata = "digits"\nsteps = 7\nlr = 1e-3\nhflip = true\namp = "off"\n')
    _, a = script["parse"](["--config", cfg])
    assert (a.model, a.data, a.steps, a.lr, a.hflip, a.amp, a.dim) == ("vit", "digits", 7, 1e-3, True, "off", 128)
    _, a = script["parse"](["--steps", "9", "--config", cfg, "--no-hflip", "--amp"])  # flags win, wherever they are
    assert (a.steps, a.hflip, a.amp, a.model) == (9, False, "bf16", "vit")
    _, a = script["parse"]([f"--config={_write(tmp_path, 'amp = false')}"])
    assert a.amp == "off"


@pytest.mark.parametrize("text, words", [
    ("epochs = 3", "unknown key 'epochs'"),
    ("batch-size = 3", "unknown key 'batch-size'"),
    ("steps = 0", "steps: expected an integer >= 1"),
    ("steps = 1e4", "steps: expected an integer"),
    ("hflip = 1", "hflip: expected true or false"),
    ("lr = true", "lr: expected a number"),
    ('model = "resnet"', "model: expected one of"),
    ("device = 0", "device: expected a string"),
    ("steps = [1, 2]", "steps: expected a single value"),
    ("steps = ", "not valid TOML"),
])  # fmt: skip
def test_bad_config_files_are_refused_naming_file_and_key(script, tmp_path, capsys, monkeypatch, text, words):
    monkeypatch.setattr("crate_lite.data.load_classification", lambda *a, **k: pytest.fail("data was loaded"))
    cfg = _write(tmp_path, text)
    with pytest.raises(SystemExit) as exit_:
        script["main"](["--config", cfg])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and words in err and "--config" in err, err


def test_missing_config_file(script, capsys, tmp_path):
    with pytest.raises(SystemExit):
        script["main"](["--config", str(tmp_path / "nope.toml")])
    assert "--config: no such file" in capsys.readouterr().err


def test_published_configs_parse_and_pass_the_checks(script):
    """Every configs/*.toml is read and checked (its device, when CUDA, replaced by the CPU)."""
    files = sorted((ROOT / "configs").glob("*.toml"))
    assert {"cifar10_crate_gpu.toml", "cifar10_vit_gpu.toml", "cifar10_crate_cpu.toml"} <= {f.name for f in files}
    for f in files:
        p, a = script["parse"](["--config", str(f), "--device", "cpu", "--amp", "auto"])
        tc = script["check"](p, a)
        assert tc.steps == a.steps and a.data in script["DATASETS"], f


@pytest.mark.parametrize("args, flag", [
    (["--crop-padding", "-1"], "--crop-padding"), (["--num-workers", "-1"], "--num-workers"),
    (["--amp", "fp8"], "--amp"), (["--shift", "2", "--crop-padding", "4"], "--crop-padding"),
    (["--data", "shapes", "--patch", "5"], "--patch"),
])  # fmt: skip
def test_new_flags_are_checked_before_loading_data(main, capsys, monkeypatch, args, flag):
    monkeypatch.setattr("crate_lite.data.load_classification", lambda *a, **k: pytest.fail("data was loaded"))
    monkeypatch.setattr("crate_lite.data.synthetic_shapes", lambda *a, **k: pytest.fail("data was made"))
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2 and flag in capsys.readouterr().err


def test_shapes_crop_flip_workers_and_bf16_run_and_are_recorded(script, tmp_path):
    """A few steps on the shapes set with every new flag; the JSON says what ran. bf16 autocast
    is asked for on the CPU only where this CPU runs it."""
    amp = ["--amp"] if script["cpu_bf16_autocast"]() else []
    args = ["--data", "shapes", "--dim", "16", "--depth", "1", "--heads", "2", "--steps", "2", "--batch-size", "8",
            "--warmup", "0", "--threads", "1", "--no-progress", "--crop-padding", "4", "--hflip",
            "--num-workers", "1", *amp, "--out", str(tmp_path / "o.json")]  # fmt: skip
    assert script["main"](args) == 0
    out = json.loads((tmp_path / "o.json").read_text())
    assert out["augment"] == {"crop_padding": 4, "hflip": True} and out["config"]["num_workers"] == 1
    assert out["model_config"]["num_classes"] == 3 and out["model_config"]["image_size"] == 32
    assert out["autocast"] == ("bf16" if amp else "off")
    assert out["flops_per_example"] > 0 and out["flops_per_s"] > 0 and out["fraction_of_peak"] is None
    assert out["data"].startswith("synthetic shapes 32x32")


# ----------------------------------------------------------------------------- scripts/gpu_profile.py, gpu_check.py


@pytest.fixture(scope="module")
def gpu_profile():
    return runpy.run_path(str(ROOT / "scripts" / "gpu_profile.py"))


def test_gpu_chapters_are_found_by_their_gpu_picks(gpu_profile, tmp_path):
    (tmp_path / "07_a.py").write_text("n = profiles.pick(smoke=1, cpu=2, gpu=3)\n")
    (tmp_path / "08_b.py").write_text("n = profiles.pick(smoke=1, cpu=2)  # gpu= in a comment does not count\n")
    (tmp_path / "09_c.py").write_text(
        "from crate_lite.profiles import pick\nn = pick(smoke=1, cpu=2, gpu=3, gpu_short=2)\n"
    )
    (tmp_path / "notes.py").write_text("n = profiles.pick(smoke=1, cpu=2, gpu=3)\n")  # not a chapter
    found = [(p.name, short) for p, short in gpu_profile["gpu_chapters"](tmp_path)]
    assert found == [("07_a.py", False), ("09_c.py", True)]


def test_gpu_profile_dry_run_lists_chapters_configs_and_data(gpu_profile, capsys):
    assert gpu_profile["main"](["--dry-run", "--short", "--data-root", str(ROOT / "datasets")]) == 0
    out = capsys.readouterr().out
    for path, _ in gpu_profile["gpu_chapters"]():
        assert f"chapter {path.stem}" in out
    for cfg in (ROOT / "configs").glob("*_gpu.toml"):
        assert f"--config configs/{cfg.name}" in out
    assert "--steps 1000" in out and "full CIFAR-10" in out


@pytest.mark.timeout(300)
def test_gpu_profile_runs_end_to_end_without_a_gpu(tmp_path):
    """The script's whole path (notebook execution, a train run, results, summary) with
    --allow-cpu on the smallest GPU chapter and a tiny override of one config."""
    tiny = "--data shapes --device cpu --amp auto --dim 16 --depth 1 --heads 2 --steps 2 --batch-size 8 --warmup 0"
    cmd = [sys.executable, "scripts/gpu_profile.py", "--allow-cpu", "--short", "--chapters", "00",
           "--configs", "cifar10_crate_gpu", "--extra-train-args", tiny, "--out", str(tmp_path)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["mode"] == "short" and [r["status"] for r in summary["items"]] == ["ok", "ok"]
    assert (tmp_path / "results" / "00_setup_and_notation.json").is_file()
    assert (tmp_path / "results" / "RESULTS.md").is_file() and (tmp_path / "SUMMARY.md").is_file()
    run = json.loads((tmp_path / "train" / "cifar10_crate_gpu.json").read_text())
    assert run["steps"] == 2 and run["config_file"] == "configs/cifar10_crate_gpu.toml"
    notebook = json.loads((tmp_path / "notebooks" / "00_setup_and_notation.ipynb").read_text())
    assert any("profile 'gpu'" in "".join(o.get("text", "")) for c in notebook["cells"] for o in c.get("outputs", []))


def test_gpu_check_covers_every_gpu_config_workers_and_torchrun():
    check = runpy.run_path(str(ROOT / "scripts" / "gpu_check.py"))
    configs = sorted((ROOT / "configs").glob("*_gpu.toml"))
    plan = check["runs"](configs, "bf16")
    commands = [" ".join(cmd) for _, cmd, _ in plan]
    for cfg in configs:
        assert any(f"--config {cfg}" in c and "--device cpu" in c and "--amp bf16" in c for c in commands)
    assert any("--num-workers 2" in c for c in commands)
    assert any(
        "torch.distributed.run --standalone --nproc_per_node=2" in c for c, (_, _, w) in zip(commands, plan) if w == 2
    )


# ----------------------------------------------------------------------------- language models (chapter 10)

LM_TINY = ["--data", "shakespeare_char", "--dim", "16", "--depth", "1", "--heads", "2", "--block-size", "16",
           "--steps", "2", "--batch-size", "4", "--warmup", "1", "--threads", "1", "--no-progress"]  # fmt: skip


@pytest.fixture
def shakespeare(shared_data):
    if not (shared_data / "tinyshakespeare" / "input.txt").is_file():
        pytest.skip(f"Tiny Shakespeare not found in {shared_data}")
    return shared_data


@pytest.mark.parametrize("model, task", [
    ("gpt", "causal_lm"), ("crate-gpt", "causal_lm"), ("crate-alpha", "causal_lm"),
    ("bert", "masked_lm"), ("crate-bert", "masked_lm"),
])  # fmt: skip
def test_language_models_train_through_the_cli(script, shakespeare, tmp_path, model, task):
    """A few steps of each language model on Tiny Shakespeare; the JSON has the task's scores
    (loss and bits per character, or masked-token loss and accuracy), tokens/s and the hardware."""
    from crate_lite.models import language as LM

    out = tmp_path / "o.json"
    assert script["main"]([*LM_TINY, "--model", model, "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    causal = task == "causal_lm"
    mc = r["model_config"]
    assert r["task"] == task and r["steps"] == 2 and mc["layer"] == script["MODELS"][model].layer
    assert (mc["causal"], mc["vocab_size"], mc["block_size"], mc["tied"]) == (causal, 65 if causal else 66, 16, True)
    assert r["params"] == LM.lm_param_count(LM.LMConfig(**mc))
    scores = ("val_loss", "val_bpc") if causal else ("val_mlm_loss", "val_mlm_acc")
    assert all(math.isfinite(r[k]) for k in scores) and "test_acc" not in r and "augment" not in r
    if causal:
        assert r["val_bpc"] == pytest.approx(r["val_loss"] / math.log(2))
    assert 0 < r[scores[0]] < 2 * math.log(66)  # nats per character, near ln V after 2 steps
    assert r["tokens_per_s"] == pytest.approx(16 * r["examples_per_s"]) and r["flops_per_example"] > 0
    assert r["hardware"].endswith("1 torch threads") and r["history"][-1]["step"] == 2
    assert r["data"].startswith("tinyshakespeare, characters (65 tokens)")


def test_language_options_reach_the_model(script, shakespeare, tmp_path):
    out = tmp_path / "o.json"
    args = [*LM_TINY, "--model", "crate-gpt", "--no-tied", "--lam", "0", "--step-size", "0.5", "--min-lr-ratio",
            "0.1", "--beta2", "0.99", "--grad-clip", "0.5", "--out", str(out)]  # fmt: skip
    assert script["main"](args) == 0
    r = json.loads(out.read_text())
    assert (r["model_config"]["tied"], r["model_config"]["lam"], r["model_config"]["step_size"]) == (False, 0, 0.5)
    assert (r["config"]["min_lr_ratio"], r["config"]["betas"], r["config"]["grad_clip"]) == (0.1, [0.9, 0.99], 0.5)


def test_language_run_is_chapter_10s_training_and_both_data_paths_agree(script, shakespeare, tmp_path):
    """The CLI trains what chapter 10's train_lm trains (the same windows from data.random_windows,
    the same initial weights, the same loop): equal losses; DataLoader workers change nothing."""
    import torch

    from crate_lite import data, train
    from crate_lite.models import language as LM

    out = {}
    for workers in ("0", "1"):
        path = tmp_path / f"w{workers}.json"
        assert script["main"]([*LM_TINY, "--model", "gpt", "--num-workers", workers, "--out", str(path)]) == 0
        out[workers] = json.loads(path.read_text())
    assert out["0"]["final_loss"] == out["1"]["final_loss"] and out["0"]["val_loss"] == out["1"]["val_loss"]
    train_set, val_set, _ = data.load_char_dataset("tinyshakespeare", 16)
    windows = data.random_windows(train_set.ids, 16, 2 * 4, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = LM.LanguageModel(LM.LMConfig(65, block_size=16, dim=16, depth=1, heads=2, layer="gpt"))
    tc = train.TrainConfig(steps=2, batch_size=4, lr=2e-3, warmup_steps=1, progress=False)  # the CLI's defaults
    res = train.fit(model, LM.causal_lm_loss(), windows, tc, evaluate=LM.evaluate_lm(val_set.ids, 16))
    assert res.final_loss == out["0"]["final_loss"] and res.evaluation["val_loss"] == out["0"]["val_loss"]


@pytest.mark.parametrize("args, flag", [
    (["--model", "gpt", "--data", "mnist"], "--data"),
    (["--model", "crate", "--data", "shakespeare_char"], "--data"),
    (["--model", "gpt", "--data", "shakespeare_char", "--patch", "4"], "--patch"),
    (["--model", "crate-gpt", "--data", "shakespeare_char", "--hflip"], "--hflip"),
    (["--model", "crate-gpt", "--data", "shakespeare_char", "--crop-padding", "2"], "--crop-padding"),
    (["--model", "bert", "--data", "shakespeare_char", "--label-smoothing", "0.1"], "--label-smoothing"),
    (["--model", "gpt", "--data", "shakespeare_char", "--block-size", "0"], "--block-size"),
    (["--model", "gpt", "--data", "shakespeare_char", "--lam", "0.1"], "--lam"),
    (["--model", "crate-gpt", "--data", "shakespeare_char", "--step-size", "0"], "--step-size"),
    (["--model", "crate-bert", "--data", "shakespeare_char", "--lam", "-1"], "--lam"),
    (["--model", "gpt", "--data", "shakespeare_char", "--dim", "30"], "--heads"),
    (["--model", "vit", "--step-size", "0.5"], "--step-size"),
    (["--model", "crate", "--block-size", "64"], "--block-size"),
    (["--model", "vit", "--no-tied"], "--tied"),
    (["--beta2", "1"], "--beta2"), (["--min-lr-ratio", "1.5"], "--min-lr-ratio"), (["--grad-clip", "0"], "--grad-clip"),
])  # fmt: skip
def test_language_and_optimiser_flags_are_checked_before_loading_data(main, capsys, monkeypatch, args, flag):
    for name in ("load_text", "load_char_dataset", "load_classification"):
        monkeypatch.setattr(f"crate_lite.data.{name}", lambda *a, **k: pytest.fail("data was loaded"))
    with pytest.raises(SystemExit) as exit_:
        main(args)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and flag in err, err


@pytest.mark.parametrize("size, sizes, gpt_params", [
    ("cpu", dict(depth=4, heads=4, block_size=64, batch_size=12, steps=2000), 809_856),
    ("gpu", dict(depth=6, heads=6, block_size=256, batch_size=64, steps=5000), 10_770_816),
])  # fmt: skip
def test_shakespeare_configs_are_nanogpts_recipes_at_equal_parameters(script, size, sizes, gpt_params):
    """configs/shakespeare_char_{gpt,crate}_{cpu,gpu}.toml: nanoGPT's shakespeare_char optimiser
    settings and sizes (its README's CPU overrides; its GPU config), CRATE within 5 % of the GPT's
    parameter count (chapter 10's equal-parameter comparison)."""
    from crate_lite.models import language as LM

    counts = {}
    for model in ("gpt", "crate"):
        path = ROOT / "configs" / f"shakespeare_char_{model}_{size}.toml"
        p, a = script["parse"](["--config", str(path), "--device", "cpu", "--amp", "auto"])
        tc = script["check"](p, a)
        assert {k: getattr(a, k) for k in sizes} == sizes and a.data == "shakespeare_char" and a.tied
        recipe = (tc.lr, tc.warmup_steps, tc.min_lr_ratio, tc.betas, tc.weight_decay, tc.grad_clip)
        assert recipe == (1e-3, 100, 0.1, (0.9, 0.99), 0.1, 1.0), path.name
        counts[model] = LM.lm_param_count(script["lm_config"](a, 65))
    assert counts["gpt"] == gpt_params and abs(counts["crate"] / counts["gpt"] - 1) < 0.05, counts


def test_gpu_profile_digest_of_a_language_run(gpu_profile, tmp_path):
    path = tmp_path / "r.json"
    history = [{"step": 250, "val_loss": 1.7}, {"step": 2500, "val_loss": 1.45}, {"step": 5000, "val_loss": 1.5}]
    run = {"steps": 5000, "val_loss": 1.5, "val_bpc": 2.164, "history": history, "examples_per_s": 100.0,
           "tokens_per_s": 25600.0}  # fmt: skip
    text = gpu_profile["numbers"](path.write_text(json.dumps(run)) and path)
    assert "val loss 1.5000 nats" in text and "best 1.4500 at step 2500" in text, text
    assert "25,600 tokens/s" in text and "images/s" not in text
