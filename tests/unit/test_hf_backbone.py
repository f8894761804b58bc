"""Hugging Face backbones: tiny Qwen2, Llama and GPT-2 models built from configs, saved to a
folder and loaded by path (no downloads), wrapped with the built-in backbone's interface."""
from __future__ import annotations

import shutil

import pytest
import torch

from dlms.backbones import HFBackbone, build_backbone, resolve_model_config
from dlms.backbones.huggingface import load_hf_config
from dlms.config import ModelConfig
from dlms.data.tokenizer import load_tokenizer, special_ids, train_bpe_tokenizer
from dlms.errors import ConfigError
from dlms.checkpoint import _write_tensors, load_weights, read_tensors
from tests.backbone_helpers import plain_tokenizer

ARCHS = ("qwen2", "llama", "gpt2")
TEXTS = ["the cat sat on the mat.", "a dog ran in the park!", "the chef cooked a fine soup."] * 30
L = 10


def _plain_tokenizer():
    """A GPT-2 style tokenizer: byte-level BPE whose only special token is <|endoftext|> (no pad, no mask)."""
    return plain_tokenizer(TEXTS)


def _hf_config(arch: str, vocab: int):
    from transformers import GPT2Config, LlamaConfig, Qwen2Config

    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=1, vocab_size=vocab, max_position_embeddings=64)
    if arch == "qwen2":
        return Qwen2Config(**small)
    if arch == "llama":
        return LlamaConfig(**small)
    return GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=vocab, n_positions=64, bos_token_id=0,
                      eos_token_id=0)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, str]:
    """{arch: folder with a tiny pretrained model and its tokenizer}; GPT-2's tokenizer has no mask token."""
    from transformers import AutoModelForCausalLM

    out = {}
    for arch in ARCHS:
        tokenizer = _plain_tokenizer() if arch == "gpt2" else train_bpe_tokenizer(TEXTS, 300)
        folder = tmp_path_factory.mktemp(arch)
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(_hf_config(arch, len(tokenizer))).save_pretrained(str(folder))
        tokenizer.save_pretrained(str(folder))
        out[arch] = str(folder)
    return out


def load(folder: str, causal: bool = False, **options) -> tuple[HFBackbone, object]:
    tokenizer = load_tokenizer(folder)
    torch.manual_seed(0)
    model = HFBackbone.from_pretrained(folder, causal=causal, vocab_size=len(tokenizer), **options)
    return model.eval(), tokenizer


def ids(vocab: int, batch: int = 2, length: int = L, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(4, vocab, (batch, length), generator=g)


@pytest.mark.parametrize("arch", ARCHS)
def test_bidirectional_first_position_sees_the_last_token(folders, arch):
    model, tok = load(folders[arch], causal=False)
    x = ids(len(tok))
    y = x.clone()
    y[:, -1] = 4 + (y[:, -1] - 3) % (len(tok) - 4)  # another ordinary token
    with torch.no_grad():
        a, b = model(x), model(y)
    assert not torch.allclose(a[:, 0], b[:, 0])


@pytest.mark.parametrize("arch", ARCHS)
def test_causal_mode_does_not_look_ahead_and_keeps_the_pretrained_outputs(folders, arch):
    from transformers import AutoModelForCausalLM

    model, _ = load(folders[arch], causal=True)
    pretrained = AutoModelForCausalLM.from_pretrained(folders[arch]).eval()
    rows = pretrained.config.vocab_size
    x = ids(rows)  # ids the pretrained model knows (before a mask token was added)
    y = x.clone()
    y[:, -1] = 4 + (y[:, -1] - 3) % (rows - 4)
    with torch.no_grad():
        a, b = model(x), model(y)
        reference = pretrained(x).logits
    torch.testing.assert_close(a[:, :-1], b[:, :-1])
    assert not torch.allclose(a[:, -1], b[:, -1])
    # The wrapper is the pretrained model: the original vocabulary's logits are unchanged.
    n = reference.shape[-1]
    torch.testing.assert_close(a[..., :n], reference, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
def test_time_conditioning_starts_as_the_identity_and_then_matters(folders, arch):
    model, tok = load(folders[arch], time_conditioning=True)
    assert model.spec.time_conditioning
    x = ids(len(tok))
    t = torch.tensor([0.2, 0.9])
    with torch.no_grad():
        plain = model(x)
        torch.testing.assert_close(model(x, time=t), plain)  # zero-initialised output layer
        torch.nn.init.normal_(model.time_mlp[2].weight, std=0.5)
        early, late = model(x, time=torch.tensor([0.1, 0.1])), model(x, time=torch.tensor([0.9, 0.9]))
    assert not torch.allclose(early, late)
    assert not torch.allclose(early, plain)


@pytest.mark.parametrize("arch", ARCHS)
def test_select_returns_logits_at_the_selected_positions(folders, arch):
    model, tok = load(folders[arch])
    x = ids(len(tok))
    select = torch.zeros_like(x, dtype=torch.bool)
    select[0, 1], select[1, 3], select[1, 7] = True, True, True
    with torch.no_grad():
        full, picked = model(x), model(x, select=select)
    assert picked.shape == (3, len(tok))
    torch.testing.assert_close(picked, full[select])
    assert model.hidden(x).shape == (2, L, 32)


@pytest.mark.parametrize("arch", ARCHS)
def test_mask_token_exists_inside_the_vocabulary(folders, arch):
    model, tok = load(folders[arch])
    ids_ = special_ids(tok)
    assert ids_["mask"] is not None and 0 <= ids_["mask"] < model.spec.vocab_size == len(tok)
    assert len({ids_["pad"], ids_["eos"], ids_["mask"]}) == 3
    assert model.embed.weight.shape == (len(tok), 32)
    assert model.get_input_embeddings() is model.embed


def test_a_tokenizer_without_mask_token_gets_one_and_the_embeddings_grow(folders):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    raw = AutoTokenizer.from_pretrained(folders["gpt2"])
    assert raw.mask_token is None and raw.pad_token is None
    pretrained = AutoModelForCausalLM.from_pretrained(folders["gpt2"])
    rows = pretrained.get_input_embeddings().weight.shape[0]
    model, tok = load(folders["gpt2"])
    assert len(tok) == rows + 2  # <pad> and <mask> added
    assert tok.mask_token_id >= rows and tok.mask_token_id < model.spec.vocab_size
    assert model.embed.weight.shape[0] == len(tok) and model.hf.config.vocab_size == len(tok)
    with torch.no_grad():
        torch.testing.assert_close(model.embed.weight[:rows], pretrained.get_input_embeddings().weight)
        logits = model(torch.tensor([[tok.mask_token_id, 5, 6]]))
    assert logits.shape == (1, 3, len(tok))


@pytest.mark.parametrize("arch", ARCHS)
def test_checkpoint_round_trip_without_the_pretrained_folder(folders, arch, tmp_path):
    """Weights (tied ones once) in safetensors + the saved config.json rebuild the same model offline."""
    tok = load_tokenizer(folders[arch])
    cfg = resolve_model_config(ModelConfig(backbone=folders[arch], time_conditioning=True, num_classes=2),
                               seq_len=L, causal=False)
    torch.manual_seed(0)
    model = build_backbone(cfg, len(tok)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))  # "fine-tuned": differs from the pretrained weights
    state = model.state_dict()
    if arch == "gpt2":  # tied lm_head / wte: stored once
        assert model._aliases and not set(model._aliases) & set(state)
    _write_tensors(state, tmp_path / "model.safetensors")
    model.save_architecture(tmp_path)
    moved = tmp_path / "gone"
    shutil.move(folders[arch], moved)
    try:
        torch.manual_seed(1)
        again = build_backbone(cfg, len(tok), checkpoint=tmp_path).eval()
        load_weights(again, read_tensors(tmp_path / "model.safetensors"), tmp_path)
    finally:
        shutil.move(moved, folders[arch])
    x = ids(len(tok))
    kw = dict(time=torch.tensor([0.3, 0.6]), labels=torch.tensor([0, 2]))
    with torch.no_grad():
        torch.testing.assert_close(again(x, **kw), model(x, **kw))
    if arch == "gpt2":
        assert again.hf.lm_head.weight is again.embed.weight  # still tied after loading


@pytest.mark.parametrize("arch", ["qwen2", "gpt2"])
def test_kv_cache_decoding_matches_the_full_forward(folders, arch):
    model, tok = load(folders[arch], causal=True)
    x = ids(len(tok), batch=2, length=6)
    with torch.no_grad():
        full = model(x)
        cache = model.new_cache(2, 6, torch.device("cpu"), torch.float32)
        steps = [model(x[:, :3], cache=cache)[:, -1]]
        steps += [model(x[:, i : i + 1], cache=cache)[:, -1] for i in range(3, 6)]
    torch.testing.assert_close(torch.stack(steps, 1), full[:, 2:], rtol=1e-4, atol=1e-4)
    bidirectional, _ = load(folders[arch], causal=False)
    with pytest.raises(ValueError, match="causal"):
        bidirectional.new_cache(1, 4, torch.device("cpu"), torch.float32)


def test_inputs_embeds_and_an_input_projection(folders):
    model, tok = load(folders["qwen2"], input_dim=65)
    x = ids(len(tok))
    with torch.no_grad():
        torch.testing.assert_close(model.hidden(inputs_embeds=model.embed(x)), model.hidden(x))
        assert model(None, inputs_embeds=torch.randn(2, L, 65)).shape == (2, L, len(tok))
        with pytest.raises(ValueError, match="width 7"):
            model(None, inputs_embeds=torch.randn(2, L, 7))


def test_class_labels_start_neutral_and_need_conditioning(folders):
    model, tok = load(folders["llama"], num_classes=3)
    assert model.null_class == 3
    x = ids(len(tok))
    with torch.no_grad():
        torch.testing.assert_close(model(x, labels=torch.tensor([0, 1])), model(x))
    plain, _ = load(folders["llama"])
    with pytest.raises(ValueError, match="num_classes"):
        plain(x, labels=torch.tensor([0, 1]))


def test_bf16_weights_run_with_float_time_and_embeddings(folders):
    model, tok = load(folders["qwen2"], time_conditioning=True, input_dim=8)
    model = model.to(torch.bfloat16)
    x = ids(len(tok))
    with torch.no_grad():
        assert model(x, time=torch.rand(2)).dtype == torch.bfloat16
        assert model(None, inputs_embeds=torch.randn(2, L, 8), time=torch.rand(2)).shape == (2, L, len(tok))


def test_config_resolution_keeps_the_pretrained_sizes(folders):
    cfg = resolve_model_config(ModelConfig(backbone=folders["qwen2"]), seq_len=16, causal=False)
    assert cfg.max_seq_len == 16 and cfg.causal is False and cfg.d_model is None
    with pytest.raises(ConfigError, match="model.d_model cannot be set"):
        resolve_model_config(ModelConfig(backbone=folders["qwen2"], d_model=64), seq_len=16, causal=False)
    with pytest.raises(ConfigError, match="does not suit"):
        resolve_model_config(ModelConfig(backbone=folders["qwen2"], causal=True), seq_len=16, causal=False)
    too_long = resolve_model_config(ModelConfig(backbone=folders["qwen2"]), seq_len=128, causal=False)
    with pytest.raises(ConfigError, match="exceeds backbone"):
        build_backbone(too_long, 300)


def test_missing_or_unreachable_backbones_are_one_line_errors(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="does not exist") as missing:
        load_hf_config(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no config.json") as empty:
        load_hf_config(str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError) as hub:
        load_hf_config("dlms-test/no-such-model")
    text = str(hub.value)
    assert "'dlms-test/no-such-model'" in text and "--backbone DIR" in text and "save_pretrained" in text
    for err in (missing, empty, hub):
        assert "\n" not in str(err.value)


def test_an_unreachable_hub_is_not_retried(monkeypatch):
    """Without HF_HUB_OFFLINE, one quick reachability check replaces the hub client's long retries."""
    import time

    from huggingface_hub import constants

    from dlms import hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    calls = []
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=5.0: calls.append(timeout) or False)
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="Hub is unreachable"):
        load_hf_config("dlms-test/no-such-model")
    assert calls and time.perf_counter() - start < 10


def test_a_folder_with_a_config_but_no_weights_is_one_line(folders, tmp_path):
    shutil.copy(f"{folders['qwen2']}/config.json", tmp_path / "config.json")
    with pytest.raises(ConfigError, match="could not be loaded as a causal LM") as err:
        HFBackbone.from_pretrained(str(tmp_path), causal=False)
    assert "\n" not in str(err.value)
