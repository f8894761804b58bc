"""Bad input: one clear `error:` line that names the problem, exit status 2, no traceback,
and no lost work."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from dlms.cli import main
from tests.conftest import tiny_overrides


def _fails(capsys, argv: list[str], *expected: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("error:") and "\n" not in err and "Traceback" not in err
    for word in expected:
        assert word in err, f"{word!r} not in {err!r}"
    return err


def test_missing_data(tmp_path, capsys):
    _fails(capsys, ["train", *tiny_overrides(tmp_path / "r"), f"data.dataset={tmp_path / 'nope.txt'}"],
           "nope.txt", "does not exist")


def test_empty_data(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    _fails(capsys, ["train", *tiny_overrides(tmp_path / "r"), "--dataset", str(empty)], "empty.txt")


def test_binary_data(tmp_path, capsys):
    binary = tmp_path / "weights.txt"
    binary.write_bytes(bytes(range(256)) * 10)
    _fails(capsys, ["train", *tiny_overrides(tmp_path / "r"), "--dataset", str(binary)], "weights.txt", "UTF-8")


def test_unknown_config_key(tmp_path, capsys):
    _fails(capsys, ["train", *tiny_overrides(tmp_path / "r"), "train.batch_sise=4"], "train.batch_sise", "batch_size")


def test_wrong_type_in_yaml(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("train:\n  batch_size: many\n")
    _fails(capsys, ["train", "--config", str(cfg)], "train.batch_size", "int")


def test_unknown_section_in_yaml(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("trainer:\n  batch_size: 4\n")
    _fails(capsys, ["train", "--config", str(cfg)], "trainer")


def test_prompt_longer_than_sequence(trained_runs, capsys):
    _fails(capsys, ["generate", "--checkpoint", str(trained_runs["masked"]), "--seq_len", "6",
                    "--prompt", "the chef cooked a delicious pasta at the bistro"], "prompt", "--seq_len")


def test_checkpoint_of_another_method(trained_runs, capsys):
    _fails(capsys, ["eval", "--checkpoint", str(trained_runs["masked"]), "--ar_checkpoint",
                    str(trained_runs["masked"]), "--num_samples", "2", "--max_sequences", "4"], "masked", "'ar'")


def test_damaged_checkpoint(trained_runs, tmp_path, capsys):
    run = tmp_path / "damaged"
    shutil.copytree(trained_runs["ar"], run)
    weights = run / "checkpoint" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    _fails(capsys, ["generate", "--checkpoint", str(run)], "damaged")


def test_not_a_checkpoint(tmp_path, capsys):
    _fails(capsys, ["eval", "--checkpoint", str(tmp_path)], "no checkpoint")


def test_unknown_label(trained_runs, capsys):
    _fails(capsys, ["generate", "--checkpoint", str(trained_runs["masked"]), "--label", "positive"], "label")


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, capsys, monkeypatch):
    from dlms.methods.masked import MaskedDiffusion

    run = tmp_path / "nan"
    original = MaskedDiffusion.loss
    calls = {"n": 0}

    def loss_that_diverges(self, model, batch):
        calls["n"] += 1
        out = original(self, model, batch)
        if calls["n"] > 10:
            out.loss = out.loss * torch.tensor(float("nan"))
        return out

    monkeypatch.setattr(MaskedDiffusion, "loss", loss_that_diverges)
    _fails(capsys, ["train", *tiny_overrides(run, steps=16)], "nan", "step 11", "checkpoint")
    state = json.loads((run / "checkpoint" / "trainer_state.json").read_text())
    assert state["step"] == 8  # the save at step 8 survives; nothing was written after the NaN
    weights = load_file(str(run / "checkpoint" / "model.safetensors"))
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_value_out_of_range(tmp_path, capsys):
    _fails(capsys, ["train", *tiny_overrides(tmp_path / "r"), "--batch_size", "0"], "train.batch_size", "at least 1")


def test_cuda_without_a_gpu(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    _fails(capsys, ["train", *tiny_overrides(tmp_path / "r"), "--device", "cuda"], "cuda", "--device cpu")


def test_zero_denoising_steps(trained_runs, capsys):
    _fails(capsys, ["generate", "--checkpoint", str(trained_runs["masked"]), "--num_steps", "0"], "steps")
