"""Fine-tuning a (tiny) pretrained Hugging Face model through the command line: `--backbone DIR`
for masked diffusion and AR, then generate and eval; the run needs no pretrained folder later."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from dlms.cli import main
from tests.backbone_helpers import save_tiny_qwen
from tests.conftest import tiny_overrides

TEXTS = ["the chef cooked a fine soup.", "a dog ran in the park!", "the cat sat on the mat."] * 30


@pytest.fixture(scope="module")
def tiny_qwen(tmp_path_factory) -> Path:
    """A folder like a downloaded Qwen2: config.json, weights and a tokenizer (with no mask token in its config)."""
    from dlms.data.tokenizer import train_bpe_tokenizer

    return save_tiny_qwen(tmp_path_factory.mktemp("tiny-qwen"), train_bpe_tokenizer(TEXTS, 300))


@pytest.fixture(scope="module")
def hf_runs(tiny_qwen, tmp_path_factory) -> dict[str, Path]:
    runs = {}
    for method in ("masked", "ar"):
        out = tmp_path_factory.mktemp(f"hf-{method}")
        code = main(["train", "--samples", "1", "--backbone", str(tiny_qwen),
                     *tiny_overrides(out, method, steps=6, **{"train.eval_every": 3, "train.save_every": 3,
                                                              "train.learning_rate": 1e-3})])
        assert code == 0
        runs[method] = out
    return runs


@pytest.mark.parametrize("method", ["masked", "ar"])
def test_train_fine_tunes_the_pretrained_model(hf_runs, tiny_qwen, method):
    import yaml
    from safetensors.torch import load_file

    ckpt = hf_runs[method] / "checkpoint"
    cfg = yaml.safe_load((ckpt / "config.yaml").read_text())
    assert cfg["model"]["backbone"] == str(tiny_qwen) and cfg["data"]["tokenizer"] == str(tiny_qwen)
    assert cfg["model"]["causal"] is (method == "ar")
    saved = json.loads((ckpt / "backbone" / "config.json").read_text())
    assert saved["model_type"] == "qwen2" and saved["is_causal"] is (method == "ar")
    weights = load_file(str(ckpt / "model.safetensors"))
    assert "hf.model.embed_tokens.weight" in weights and "hf.lm_head.weight" not in weights  # tied: stored once
    lines = [json.loads(line) for line in (hf_runs[method] / "metrics.jsonl").read_text().splitlines()]
    losses = [line["loss"] for line in lines if "loss" in line]
    assert len(losses) == 6 and all(loss == loss and loss > 0 for loss in losses)
    assert any("val_nll" in line for line in lines)


@pytest.mark.parametrize("method", ["masked", "ar"])
def test_generate_and_eval_on_the_fine_tuned_run(hf_runs, method, capsys):
    run = str(hf_runs[method])
    steps = ["--num_steps", "4"] if method == "masked" else []  # AR decodes one token per step
    assert main(["generate", "--checkpoint", run, "--prompt", "the chef", "--seq_len", "16", *steps,
                 "--num_samples", "2", "--seed", "1"]) == 0
    samples = capsys.readouterr().out.rstrip("\n").split("\n")  # (random bytes may hold \x1c etc.)
    assert len(samples) == 2 and all(s.startswith("the chef") for s in samples)
    assert main(["eval", "--checkpoint", run, "--passes", "2", "--num_samples", "0", "--max_sequences", "8"]) == 0
    results = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert results["method"] == method and results["val_nll"] > 0
    assert results["val_bound"] is (method == "masked")


def test_the_checkpoint_loads_without_the_pretrained_folder(hf_runs, tiny_qwen, tmp_path):
    from dlms import DiffusionLM

    before = DiffusionLM.load_checkpoint(hf_runs["ar"])
    expected = before.sample("the chef", length=12, num_samples=2, seed=3)
    shutil.move(str(tiny_qwen), tmp_path / "moved")
    try:
        for method in ("masked", "ar"):
            lm = DiffusionLM.load_checkpoint(hf_runs[method])
            assert lm.model.spec.causal is (method == "ar")
            assert len(lm.sample("the chef", length=12, num_samples=2, seed=3)) == 2
        assert DiffusionLM.load_checkpoint(hf_runs["ar"]).sample("the chef", length=12, num_samples=2, seed=3) == expected
    finally:
        shutil.move(str(tmp_path / "moved"), str(tiny_qwen))


def test_an_unreachable_hub_id_is_one_error_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = main(["train", "--samples", "0", "--backbone", "dlms-test/no-such-model",
                 *tiny_overrides(tmp_path / "run", "masked", steps=2)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error:") and "\n" not in err and "Traceback" not in err
    assert "'dlms-test/no-such-model'" in err and "--backbone DIR" in err
    assert not (tmp_path / "run").exists()


def test_a_folder_that_is_not_a_model_is_one_error_line(tmp_path, capsys):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("hello")
    code = main(["train", "--samples", "0", "--backbone", str(tmp_path / "notes"),
                 *tiny_overrides(tmp_path / "run", "masked", steps=2)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error:") and "\n" not in err
    assert "no config.json" in err
