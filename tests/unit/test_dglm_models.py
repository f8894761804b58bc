"""DGLM's foundational models: the config, the sentence encoder (tiny ones built from configs and
the bundled all-MiniLM-L6-v2 with its sha256 check), the decoder loader and `dlms models check`."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dlms.cli import main
from dlms.dglm import encoder as encoder_module
from dlms.dglm.check import check_models
from dlms.dglm.config import DglmConfig, load_dglm_config
from dlms.dglm.decoder_loading import load_decoder
from dlms.dglm.encoder import load_sentence_encoder
from dlms.errors import CheckpointError, ConfigError

@pytest.fixture(scope="module")
def tiny_gpt2_folder(tmp_path_factory):
    from transformers import GPT2Config, GPT2LMHeadModel

    from dlms.data.corpus import generate_examples
    from dlms.data.tokenizer import train_bpe_tokenizer

    folder = tmp_path_factory.mktemp("tiny-gpt2")
    tokenizer = train_bpe_tokenizer([e["text"] for e in generate_examples(200, seed=0)], vocab_size=300, out_dir=folder)
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=24, vocab_size=len(tokenizer), n_positions=32)).save_pretrained(folder)
    return folder


def test_tiny_encoder_gives_unit_vectors_that_tell_texts_apart(tiny_encoder_folder):
    enc = load_sentence_encoder(str(tiny_encoder_folder))
    vectors = enc.encode(["the food was great .", "the food was great .", "a cat sat on the mat"])
    assert enc.dim == 32 and vectors.shape == (3, 32) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(vectors[0], vectors[1], rtol=1e-5)
    assert float(vectors[0] @ vectors[2]) < 0.9999


def test_bundled_minilm_is_checked_by_sha256(monkeypatch):
    folder = encoder_module.bundled_minilm_folder()
    assert (folder / "model.safetensors").is_file()
    monkeypatch.setattr(encoder_module, "BUNDLED_SHA256", "0" * 64)
    with pytest.raises(ConfigError, match="sha256"):
        load_sentence_encoder("minilm")


def test_bundled_minilm_is_a_real_384_d_semantic_space():
    enc = load_sentence_encoder("minilm")
    v = enc.encode(["the food was great .", "the meal was delicious .", "the train left the station ."])
    assert enc.dim == 384 and enc.num_parameters > 20_000_000
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2  # paraphrases are closer than unrelated sentences


def test_missing_or_unreachable_encoders_are_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="does not exist"):
        load_sentence_encoder(str(tmp_path / "nope"))
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        load_sentence_encoder(str(tmp_path / "file.txt"))
    with pytest.raises(ConfigError, match="could not load sentence encoder 'org/no-such-encoder'") as info:
        load_sentence_encoder("org/no-such-encoder")
    assert "\n" not in str(info.value)


def test_decoder_loads_a_hugging_face_folder_and_rejects_other_dlms_methods(tiny_gpt2_folder, trained_runs):
    dec = load_decoder(str(tiny_gpt2_folder))
    assert dec.kind == "huggingface" and dec.hidden_size == 24 and dec.num_parameters > 0
    ar = load_decoder(str(trained_runs["ar"]))
    assert ar.kind == "dlms-ar" and ar.hidden_size == ar.model.spec.d_model
    with pytest.raises(CheckpointError, match="'ar'"):
        load_decoder(str(trained_runs["masked"]))


def test_config_rejects_unknown_keys_and_wrong_types(tmp_path):
    path = tmp_path / "dglm.yaml"
    path.write_text("sentence_encoder_model_name: minilm\nauto_regressive_model_name: gpt2\n")
    assert load_dglm_config(path) == DglmConfig("minilm", "gpt2")
    path.write_text("sentence_encoder: minilm\n")
    with pytest.raises(ConfigError, match="unknown config key 'sentence_encoder'"):
        load_dglm_config(path)
    path.write_text("auto_regressive_model_name: 3\n")
    with pytest.raises(ConfigError, match="must be"):
        load_dglm_config(path)


def test_models_check_reports_both_models(tiny_encoder_folder, tiny_gpt2_folder, tmp_path, capsys):
    rows = check_models(DglmConfig(str(tiny_encoder_folder), str(tiny_gpt2_folder), "cpu"))
    assert [r["role"] for r in rows] == ["sentence_encoder", "auto_regressive_decoder"]
    assert rows[0]["embedding_size"] == 32 and rows[1]["hidden_size"] == 24
    assert all(r["parameters"] > 0 and r["device"] == "cpu" and r["load_seconds"] >= 0 for r in rows)
    path = tmp_path / "dglm.yaml"
    path.write_text(f"sentence_encoder_model_name: {tiny_encoder_folder}\nauto_regressive_model_name: {tiny_gpt2_folder}\n"
                    "device: cpu\n")
    assert main(["models", "check", "--config", str(path)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith("sentence_encoder:") and "embedding 32" in out[0]
    assert json.loads(out[-1])["models"][1]["hidden_size"] == 24


def test_models_check_names_an_unreachable_model_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = tmp_path / "dglm.yaml"
    path.write_text("sentence_encoder_model_name: org/no-such-encoder\n")
    assert main(["models", "check", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: could not load sentence encoder")


def test_a_hugging_face_decoder_stage_loads_without_its_base_folder(tiny_gpt2_folder, tmp_path):
    import shutil

    import torch

    from dlms.dglm.soft_prompt import SoftPrompt, SoftPromptedDecoder, load_decoder_stage, save_decoder_stage

    base = tmp_path / "gpt2-copy"
    shutil.copytree(tiny_gpt2_folder, base)
    decoder = load_decoder(str(base))
    torch.manual_seed(0)
    model = SoftPromptedDecoder(decoder.model, SoftPrompt(8, decoder.hidden_size, num_tokens=2, width=16)).eval()
    with torch.no_grad():
        model.decoder.get_input_embeddings().weight.add_(0.01)  # "fine-tuned"
    save_decoder_stage(tmp_path / "stage", model, str(base), decoder.tokenizer)
    shutil.rmtree(base)
    loaded, tokenizer = load_decoder_stage(tmp_path / "stage")
    prefix, emb, t = torch.randint(0, 20, (2, 3)), torch.randn(2, 8), torch.rand(2)
    torch.testing.assert_close(loaded.logits(loaded.inputs(prefix, emb, t)), model.logits(model.inputs(prefix, emb, t)))
    assert tokenizer.eos_token_id == decoder.tokenizer.eos_token_id


def test_a_hugging_face_decoder_too_short_for_the_soft_prompted_input_is_refused(tiny_gpt2_folder):
    with pytest.raises(ConfigError, match="reads at most 32 positions, but .* need 64; lower decoder.max_prefix_tokens"):
        load_decoder(str(tiny_gpt2_folder), positions=64)
    assert load_decoder(str(tiny_gpt2_folder), positions=32).kind == "huggingface"
