"""Gaussian diffusion through the command line on the built-in corpus: train, generate (prompt,
guidance, --show_steps), view, eval, and the errors for a mismatched checkpoint or sampler."""
from __future__ import annotations

import json

import pytest
import yaml

from dlms import DiffusionLM
from dlms.cli import main
from dlms.errors import CheckpointError, DlmsError
from tests.conftest import tiny_overrides


@pytest.fixture(scope="module")
def gaussian_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run-gaussian")
    assert main(["train", "--samples", "0", "--method", "gaussian", *tiny_overrides(out, method="gaussian", steps=8)]) == 0
    return out


def test_train_logs_both_losses_and_saves_a_resolved_config(gaussian_run):
    ckpt = gaussian_run / "checkpoint"
    assert json.loads((ckpt / "trainer_state.json").read_text())["method"] == "gaussian"
    cfg = yaml.safe_load((ckpt / "config.yaml").read_text())
    assert cfg["method"]["schedule"] == "logsnr-cosine"
    k = cfg["method"]["embed_dim"]  # resolved: the built-in transformer gets its own 16-wide token table
    assert k == 16 and cfg["model"]["token_table_dim"] == k
    assert cfg["model"]["time_conditioning"] is True and cfg["model"]["input_dim"] == 2 * k + 1
    lines = [json.loads(l) for l in (gaussian_run / "metrics.jsonl").read_text().splitlines()]
    train = [l for l in lines if "loss" in l]
    assert [l["step"] for l in train] == list(range(1, 9))
    assert all(l["ce"] > 0 and l["mse"] > 0 for l in train)
    assert any(l.get("val_bound") is True and l["val_se"] > 0 for l in lines)


def test_generate_with_a_prompt_and_guidance_keeps_the_prompt(gaussian_run, capsys):
    code = main(["generate", "--checkpoint", str(gaussian_run), "--prompt", "the chef", "--seq_len", "24",
                 "--guidance_scale", "5.0", "--num_samples", "2", "--num_steps", "6", "--seed", "1"])
    out = capsys.readouterr().out.splitlines()
    assert code == 0 and len(out) == 2 and all(line.startswith("the chef") for line in out)
    main(["generate", "--checkpoint", str(gaussian_run), "--prompt", "the chef", "--seq_len", "24",
          "--guidance_scale", "5.0", "--num_samples", "2", "--num_steps", "6", "--seed", "1"])
    assert capsys.readouterr().out.splitlines() == out  # seeded


def test_generate_shows_the_x0_estimate_every_k_steps(gaussian_run, capsys):
    code = main(["generate", "--checkpoint", str(gaussian_run), "--seq_len", "32", "--show_steps",
                 "--step_interval", "10", "--num_steps", "20", "--num_samples", "2", "--sampler", "ddpm", "--clamp"])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    steps = [l.split("]")[0] for l in out if l.startswith("[step")]
    assert steps == ["[step   10/20", "[step   10/20", "[step   20/20", "[step   20/20"]
    assert len([l for l in out if not l.startswith("[step")]) == 2
    assert not any(" _" in l for l in out if l.startswith("[step"))  # decoded estimates, no mask glyphs


def test_view_prints_one_line_per_step(gaussian_run, capsys):
    assert main(["view", "--checkpoint", str(gaussian_run), "--steps", "20", "--seq_len", "8", "--eta", "0.5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("step   0/20") and lines[-1].startswith("final")
    assert [l.split()[1] for l in lines[1:-1]] == [f"{i}/20" for i in range(1, 21)]


def test_eval_reports_the_bound_with_its_standard_error(gaussian_run, tmp_path, capsys):
    out_file = tmp_path / "eval.json"
    code = main(["eval", "--checkpoint", str(gaussian_run), "--passes", "4", "--num_samples", "4",
                 "--max_sequences", "8", "--output", str(out_file)])
    assert code == 0 and "| val_nll |" in capsys.readouterr().out
    results = json.loads(out_file.read_text())
    assert results["method"] == "gaussian" and results["val_bound"] is True
    assert results["val_se"] > 0 and results["val_passes"] == 4 and results["val_nll"] > 0
    assert "val_discrete_nll" not in results  # no discrete-time bound for gaussian
    assert results["sampler"] == "ddim" and results["unigram_entropy"] >= 0
    lm = DiffusionLM.load_checkpoint(gaussian_run)
    with pytest.raises(DlmsError, match="discrete-time"):
        lm.evaluate(discrete_steps=4, max_sequences=4)


def test_mismatched_checkpoint_or_sampler_is_one_clear_error(gaussian_run, capsys):
    with pytest.raises(CheckpointError, match="'gaussian' model"):
        DiffusionLM.load_checkpoint(gaussian_run, expect_method="masked")
    code = main(["generate", "--checkpoint", str(gaussian_run), "--sampler", "confidence", "--num_samples", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("error: sampler 'confidence' does not work with method 'gaussian'") and "ddim" in err[0]
    assert main(["generate", "--checkpoint", str(gaussian_run), "--eta", "2", "--num_samples", "1"]) == 2
    assert capsys.readouterr().err.startswith("error: --eta must be in [0, 1]")
