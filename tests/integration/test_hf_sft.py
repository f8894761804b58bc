"""Masked response-only fine-tuning of a (tiny) Hugging Face backbone through the command line:
a Qwen2 causal LM with a Qwen-like tokenizer (no bos, eos = pad, a ChatML chat template) made
bidirectional, trained on prompt/response rows and on chat messages, then `dlms generate
--prompt` and `dlms eval`; an `ar` run on the backbone converted into a masked one with
`--init_from`; and configs/sft-qwen2.5-0.5b.yaml, whose hub model cannot be reached here."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dlms import DiffusionLM
from dlms.cli import main
from tests.backbone_helpers import chat_tokenizer, save_tiny_qwen
from tests.conftest import tiny_overrides

ROOT = Path(__file__).resolve().parents[2]
NAMES = ("eagle", "mill", "aromi", "cotto")
FOODS = ("thai", "french", "indian")
PAIRS = [(f"{n} {f}", f"the {n} serves {f} food .") for n in NAMES for f in FOODS]


@pytest.fixture(scope="module")
def tiny_qwen(tmp_path_factory) -> Path:
    """A folder like a downloaded Qwen2.5: config.json, weights (more embedding rows than tokens, as
    Qwen's padding rows) and a tokenizer with a chat template."""
    tokenizer = chat_tokenizer([f"{p} {r} user assistant" for p, r in PAIRS] * 5)
    return save_tiny_qwen(tmp_path_factory.mktemp("tiny-qwen"), tokenizer, max_positions=128, extra_rows=8)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """Three files of the same pairs: prompt/response rows, chat messages and plain text."""
    root = tmp_path_factory.mktemp("hf-sft-data")
    rows = {
        "pairs": [{"prompt": p, "response": r} for p, r in PAIRS * 8],
        "chat": [{"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": r}]}
                 for p, r in PAIRS * 8],
        "text": [{"text": f"{p} : {r}"} for p, r in PAIRS * 8],
    }
    for name, lines in rows.items():
        (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
    return {name: root / f"{name}.jsonl" for name in rows}


def sft_args(out: Path, method: str, dataset: Path, steps: int = 4, prompted: bool = True, **extra) -> list[str]:
    values = {"data.dataset": str(dataset), "data.seq_len": 32, "train.eval_every": steps,
              "train.save_every": steps, "train.eval_batches": 1, "train.learning_rate": 1e-3,
              "sample.num_steps": 4, **extra}
    if prompted:
        values["data.format"] = "prompt_response"
    return tiny_overrides(out, method, steps, **values)


def last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def sft_run(tiny_qwen, data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hf-sft-masked")
    assert main(["train", "--samples", "1", "--backbone", str(tiny_qwen), *sft_args(out, "masked", data["pairs"])]) == 0
    return out


def response_tokens(lm, n: int) -> int:
    """Non-pad tokens from each of the first `n` validation rows' response on (its eos too)."""
    val = lm.dataset().val
    pad = lm.method.special.pad
    return sum(int(np.count_nonzero(np.asarray(val.ids[i, int(val.prompt_len[i]):]) != pad))
               for i in range(min(n, len(val))))


def test_masked_fine_tuning_of_a_pretrained_backbone_on_responses(sft_run, tiny_qwen, capsys):
    """The backbone is bidirectional, its embeddings cover the tokens added (pad, mask, sep), and
    `dlms generate --prompt` prints responses, `dlms eval` the response's likelihood given its prompt."""
    from transformers import AutoTokenizer

    lm = DiffusionLM.load_checkpoint(sft_run)
    assert lm.prompted and lm.model.spec.causal is False
    saved = json.loads((sft_run / "checkpoint" / "backbone" / "config.json").read_text())
    assert saved["model_type"] == "qwen2" and saved["is_causal"] is False
    original = AutoTokenizer.from_pretrained(str(tiny_qwen))
    tok = lm.tokenizer
    assert tok.bos_token_id == tok.eos_token_id == original.eos_token_id  # no bos: eos starts a row
    added = {tok.pad_token, tok.mask_token, tok.sep_token}
    assert added == {"<pad>", "<mask>", "<sep>"} and len(tok) == len(original) + 3
    weights = load_file(str(sft_run / "checkpoint" / "model.safetensors"))
    assert weights["hf.model.embed_tokens.weight"].shape[0] == len(tok)  # grown by 3, Qwen-style spare rows gone
    capsys.readouterr()
    assert main(["generate", "--checkpoint", str(sft_run), "--prompt", "eagle thai", "--num_samples", "2",
                 "--num_steps", "4", "--seed", "0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all("<sep>" not in line and "eagle thai" not in line for line in lines)
    assert lines == lm.sample("eagle thai", steps=4, num_samples=2, seed=0)  # the responses, as the API gives them
    assert main(["eval", "--checkpoint", str(sft_run), "--passes", "2", "--num_samples", "2",
                 "--max_sequences", "8"]) == 0
    results = last_json(capsys.readouterr().out)
    assert results["method"] == "masked" and results["val_bound"] is True and np.isfinite(results["val_nll"])
    assert results["val_tokens"] == response_tokens(lm, 8)  # only the responses are scored


def test_chat_messages_are_rendered_with_the_backbones_chat_template(tiny_qwen, data, tmp_path, capsys):
    from dlms.assembly import builder_from_config

    out = tmp_path / "chat"
    assert main(["train", "--samples", "1", "--backbone", str(tiny_qwen),
                 *sft_args(out, "masked", data["chat"], steps=2, **{"data.messages_column": "messages"})]) == 0
    lm = DiffusionLM.load_checkpoint(out)
    tok = lm.tokenizer
    val = lm.dataset().val
    row, start = [int(t) for t in val.ids[0]], int(val.prompt_len[0])
    user = builder_from_config(lm.cfg.data).split_examples(str(data["chat"]), "val")[0]["prompt"].turns[0][1]
    rendered = tok.apply_chat_template([{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True)
    assert tok.decode(row[:start]) == tok.eos_token + rendered + "<sep>"
    assert lm.encode_prompt(user) == row[:start]  # a prompt at sampling time: one user turn, as in training
    capsys.readouterr()
    assert main(["generate", "--checkpoint", str(out), "--prompt", user, "--num_samples", "1", "--num_steps", "4",
                 "--seed", "0"]) == 0
    assert capsys.readouterr().out.splitlines() == lm.sample(user, steps=4, num_samples=1, seed=0)
    as_messages = lm.respond([{"role": "user", "content": user}], steps=4, seed=0)  # one conversation
    assert as_messages == lm.respond(user, steps=4, seed=0) and len(as_messages) == 1


def test_an_ar_run_on_the_backbone_converts_into_masked_response_only_fine_tuning(tiny_qwen, data, tmp_path,
                                                                                    capsys):
    """AR-to-diffusion: an ar run on plain text (its tokenizer has no separator), then a masked run
    on prompt/response rows started from it: the same weights, one more embedding row (the
    separator's, at the mean of the others), bidirectional attention."""
    ar = tmp_path / "ar"
    assert main(["train", "--samples", "0", "--backbone", str(tiny_qwen),
                 *sft_args(ar, "ar", data["text"], prompted=False)]) == 0
    masked = tmp_path / "masked"
    assert main(["train", "--samples", "0", "--init_from", str(ar),
                 *sft_args(masked, "masked", data["pairs"], steps=1, **{"train.learning_rate": 1e-9})]) == 0
    assert "started from the weights of" in " ".join(last_json(capsys.readouterr().out)["notes"])
    before = load_file(str(ar / "checkpoint" / "model.safetensors"))
    after = load_file(str(masked / "checkpoint" / "model.safetensors"))
    assert set(before) == set(after)
    embed = "hf.model.embed_tokens.weight"
    rows = before[embed].shape[0]
    assert after[embed].shape[0] == rows + 1
    torch.testing.assert_close(after[embed][:rows], before[embed], atol=1e-6, rtol=0)  # one step at lr 1e-9
    torch.testing.assert_close(after[embed][rows], before[embed].mean(0), atol=1e-6, rtol=0)
    lm = DiffusionLM.load_checkpoint(masked)
    assert lm.prompted and lm.model.spec.causal is False and lm.cfg.model.backbone == str(tiny_qwen)
    assert main(["generate", "--checkpoint", str(masked), "--prompt", "eagle thai", "--num_samples", "1",
                 "--num_steps", "4"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1


# ---------------------------------------------------------------------- configs/sft-qwen2.5-0.5b.yaml

CONFIG = ROOT / "configs" / "sft-qwen2.5-0.5b.yaml"


def test_the_sft_config_trains_in_bf16_on_a_local_copy_of_the_backbone(tiny_qwen, data, tmp_path):
    """The config as written (bf16, padded rows fitted to the data, gradient accumulation, masked on
    responses), with the backbone pointed at a local folder and the run cut to two small steps."""
    import yaml

    out = tmp_path / "run"
    assert main(["train", "--config", str(CONFIG), "--samples", "0", "--backbone", str(tiny_qwen), "--dataset",
                 str(data["pairs"]), "--out_dir", str(out), "train.num_epochs=null", "train.max_steps=2",
                 "train.batch_size=4", "train.grad_accum=2", "train.eval_every=2", "train.save_every=2",
                 "train.eval_batches=1", "train.progress=false", "data.val_fraction=0.1"]) == 0
    cfg = yaml.safe_load((out / "checkpoint" / "config.yaml").read_text())
    assert cfg["method"]["name"] == "masked" and cfg["data"]["format"] == "prompt_response"
    assert cfg["train"]["precision"] == "bf16" and cfg["model"]["causal"] is False
    assert cfg["data"]["seq_len"] is not None  # fitted to the data


def test_the_sft_config_names_an_unreachable_hub_model_in_one_line(data, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = main(["train", "--config", str(CONFIG), "--dataset", str(data["pairs"]), "--out_dir", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error:") and "\n" not in err and "Traceback" not in err
    assert "'Qwen/Qwen2.5-0.5B'" in err and "--backbone DIR" in err
    assert not (tmp_path / "r").exists()
