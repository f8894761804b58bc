"""Prompt/response fine-tuning end to end through the command line: `dlms train` on a tiny JSONL
of prompts and responses (masked and ar), `dlms generate --prompt`, `dlms eval`, rows cut to fit
and counted, and `dlms train --init_from` (an ar run into a masked one)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dlms import DiffusionLM
from dlms.cli import main
from tests.backbone_helpers import save_tiny_qwen
from tests.conftest import tiny_overrides

NAMES = ("eagle", "mill", "aromi", "cotto")
FOODS = ("thai", "french", "indian")
PAIRS = [(f"{n} {f}", f"the {n} serves {f} food .") for n in NAMES for f in FOODS]


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sft") / "sft.jsonl"
    path.write_text("".join(json.dumps({"prompt": p, "response": r}) + "\n" for p, r in PAIRS * 8), encoding="utf-8")
    return path


def sft_args(out: Path, method: str, data_file: Path, steps: int = 4, **extra) -> list[str]:
    return tiny_overrides(out, method, steps, **{
        "data.dataset": str(data_file), "data.format": "prompt_response", "data.seq_len": 32,
        "train.eval_every": steps, "train.save_every": steps, "train.eval_batches": 1, "sample.num_steps": 4,
        **extra})


def last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def sft_runs(data_file, tmp_path_factory) -> dict[str, Path]:
    runs = {}
    for method in ("masked", "ar"):
        out = tmp_path_factory.mktemp(f"sft-{method}")
        assert main(["train", "--samples", "2", *sft_args(out, method, data_file)]) == 0
        runs[method] = out
    return runs


@pytest.mark.parametrize("method", ["masked", "ar"])
def test_train_generate_and_eval_a_prompt_response_run(sft_runs, method, capsys):
    run = sft_runs[method]
    lm = DiffusionLM.load_checkpoint(run)
    assert lm.prompted and lm.cfg.data.format == "prompt_response" and lm.tokenizer.sep_token == "<sep>"
    capsys.readouterr()
    assert main(["generate", "--checkpoint", str(run), "--prompt", "eagle thai", "--num_samples", "2",
                 "--seed", "0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all("<sep>" not in line for line in lines)
    # The printed texts are the responses: what respond() gives for the same prompt and seed.
    assert lines[0] == lm.sample("eagle thai", num_samples=2, seed=0)[0]
    assert main(["eval", "--checkpoint", str(run), "--passes", "2", "--num_samples", "3", "--max_sequences", "8"]) == 0
    results = last_json(capsys.readouterr().out)
    val = lm.dataset().val
    expected = sum(int(np.count_nonzero(np.asarray(val.ids[i, int(val.prompt_len[i]):]) != lm.method.special.pad))
                   for i in range(min(8, len(val))))
    assert results["val_tokens"] == expected  # the response given the prompt, per response token
    assert results["samples"] == 3 and np.isfinite(results["val_nll"])


def test_distilling_a_prompt_response_run_is_one_clear_error(sft_runs, tmp_path, capsys):
    code = main(["distill", "--checkpoint", str(sft_runs["masked"]), "--steps", "2", "--out_dir", str(tmp_path / "d")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "prompt/response data" in err


def test_training_prints_responses_to_validation_prompts(data_file, tmp_path, capsys):
    assert main(["train", "--samples", "2", *sft_args(tmp_path / "run", "masked", data_file, steps=2)]) == 0
    out = capsys.readouterr().out
    shown = [line for line in out.splitlines() if line.startswith("  prompt: ")]
    assert len(shown) == 2 and all("  response: " in line for line in shown)


def test_rows_cut_to_fit_are_counted_in_the_log_and_the_summary(data_file, tmp_path, capsys):
    args = sft_args(tmp_path / "run", "ar", data_file, steps=2, **{"data.seq_len": 12, "train.progress": True})
    assert main(["train", "--samples", "0", *args]) == 0
    captured = capsys.readouterr()
    summary = last_json(captured.out)
    assert any("rows cut at the end of their response to fit seq_len 12" in note for note in summary["notes"])
    assert "rows cut at the end of their response" in captured.err  # the training log says it too


def test_a_missing_prompt_column_is_one_line(data_file, tmp_path, capsys):
    code = main(["train", "--samples", "0", *sft_args(tmp_path / "run", "masked", data_file),
                 "data.prompt_column=question"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "prompt column 'question' not found" in err and "prompt, response" in err and "data.prompt_column" in err


# ---------------------------------------------------------------------- --init_from


def test_init_from_an_ar_run_starts_a_masked_run_from_its_weights(trained_runs, data_file, tmp_path, capsys):
    """AR-to-diffusion conversion: the ar run's weights and tokenizer, a bidirectional masked model,
    the separator's new row at the mean of the old ones."""
    from dlms.config import load_config
    from dlms.training import Trainer

    source = trained_runs["ar"]
    cfg = load_config(None, sft_args(tmp_path / "conv", "masked", data_file, **{"model.preset": "small"}),
                      {"train": {"init_from": str(source)}})
    trainer = Trainer(cfg)
    weights = load_file(str(source / "checkpoint" / "model.safetensors"))
    state = trainer.model.state_dict()
    old = weights["embed.weight"].shape[0]
    assert state["embed.weight"].shape[0] == old + 1  # <sep> was added to the ar run's tokenizer
    torch.testing.assert_close(state["embed.weight"][:old], weights["embed.weight"])
    torch.testing.assert_close(state["embed.weight"][old], weights["embed.weight"].mean(0))
    for name, value in weights.items():
        if name != "embed.weight":
            torch.testing.assert_close(state[name], value)
    # RUN's shape (its preset, though this config says small), the new method's attention.
    assert trainer.cfg.model.preset == "tiny" and trainer.model.spec.causal is False
    assert any("started from the weights of" in note for note in trainer.notes)
    trainer.close()
    # The same through the command line: it trains, and the run keeps where it started from.
    out = tmp_path / "cli"
    assert main(["train", "--samples", "1", "--init_from", str(source), *sft_args(out, "masked", data_file)]) == 0
    assert "started from the weights of" in " ".join(last_json(capsys.readouterr().out)["notes"])
    lm = DiffusionLM.load_checkpoint(out)
    assert lm.cfg.train.init_from == str(source) and lm.method.name == "masked" and lm.prompted
    assert lm.respond("eagle thai", steps=4)[0] is not None
    # --resume continues it as any run (its own tokenizer), and cannot be combined with --init_from.
    assert main(["train", "--resume", str(out), "--max_steps", "6", "--samples", "0"]) == 0
    assert json.loads((out / "checkpoint" / "trainer_state.json").read_text())["step"] == 6
    assert main(["train", "--resume", str(out), "--init_from", str(source)]) == 2
    assert "--resume continues a run as configured" in capsys.readouterr().err


def test_init_from_weights_that_do_not_fit_is_one_clear_error(trained_runs, data_file, tmp_path, capsys):
    source = str(trained_runs["ar"])
    code = main(["train", "--samples", "0", "--init_from", source, *sft_args(tmp_path / "a", "masked", data_file),
                 "model.d_model=96"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "model.d_model=96" in err and "drop model.d_model" in err
    code = main(["train", "--samples", "0", "--init_from", source, *sft_args(tmp_path / "b", "gaussian", data_file)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "--init_from: the weights of" in err and "do not fit" in err and "same backbone shape" in err
    code = main(["train", "--samples", "0", "--init_from", str(tmp_path / "nothing"),
                 *sft_args(tmp_path / "c", "masked", data_file)])
    assert code == 2 and "does not exist" in capsys.readouterr().err


def test_a_hugging_face_ar_run_converts_into_a_masked_one(data_file, tmp_path, capsys):
    """A pretrained backbone: its tokenizer gets the separator (the embeddings grow by one row), an
    ar prompt/response run fine-tunes it, and a masked run starts from that run, made bidirectional."""
    from dlms.data.tokenizer import load_tokenizer, train_bpe_tokenizer

    folder = save_tiny_qwen(tmp_path / "qwen", train_bpe_tokenizer([p + " " + r for p, r in PAIRS] * 5, 300))
    ar_args = sft_args(tmp_path / "ar", "ar", data_file)
    assert main(["train", "--samples", "0", "--backbone", str(folder), *ar_args]) == 0
    ar = DiffusionLM.load_checkpoint(tmp_path / "ar")
    base = len(load_tokenizer(str(folder)))  # the folder's tokenizer as dlms loads it (Qwen's adds an unk token)
    assert ar.model.spec.vocab_size == base + 1 and ar.tokenizer.sep_token_id == base
    assert main(["train", "--samples", "0", "--init_from", str(tmp_path / "ar"),
                 *sft_args(tmp_path / "masked", "masked", data_file)]) == 0
    masked = DiffusionLM.load_checkpoint(tmp_path / "masked")
    assert masked.cfg.model.backbone == str(folder) and masked.model.spec.causal is False
    capsys.readouterr()
    assert main(["generate", "--checkpoint", str(tmp_path / "masked"), "--prompt", "eagle thai", "--num_samples",
                 "1", "--num_steps", "4"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1
