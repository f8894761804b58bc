"""The evaluator: scoring policy (start + text + eos, windows), features, and loading errors."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dlms.errors import DlmsError
from dlms.eval.evaluator import load_evaluator, windows

SHORT = "the chef cooks the soup"


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    """A tiny GPT-2 (window 16) with a tiny byte-level BPE, saved as a Hugging Face model folder."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from dlms.data.corpus import generate_examples
    from dlms.data.tokenizer import train_bpe_tokenizer

    folder = tmp_path_factory.mktemp("tiny-gpt2")
    texts = [e["text"] for e in generate_examples(300, seed=0)]
    tokenizer = train_bpe_tokenizer(texts, vocab_size=300, out_dir=folder)
    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=len(tokenizer), n_positions=16,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    GPT2LMHeadModel(config).eval().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def hf_eval(hf_folder):
    return load_evaluator(str(hf_folder), device="cpu")


@pytest.fixture(scope="module")
def ar_run(tmp_path_factory):
    from dlms.cli import main
    from tests.conftest import tiny_overrides

    out = tmp_path_factory.mktemp("ar")
    assert main(["train", "--samples", "0", *tiny_overrides(out, "ar", steps=4)]) == 0
    return out


def _manual_nll(model, seq: list[int]) -> float:
    """Total nats of seq[1:] given the earlier tokens, straight from the HF model."""
    with torch.no_grad():
        logits = model(torch.tensor([seq[:-1]])).logits[0].float()
    logp = torch.log_softmax(logits, -1)
    return float(-logp[torch.arange(len(seq) - 1), torch.tensor(seq[1:])].sum())


def test_windows_cover_every_token_once():
    seq = list(range(100, 137))  # 37 tokens, the first one the start token
    parts = windows(seq, start=100, max_len=16)
    assert [len(p) for p in parts] == [16, 16, 7]
    assert all(p[0] == 100 for p in parts)
    assert [t for p in parts for t in p[1:]] == seq[1:]
    assert windows(seq[:16], 100, 16) == [seq[:16]]


def test_hf_short_text_matches_hand_computation(hf_eval):
    ev = hf_eval
    assert ev.name and ev.max_len == 16
    tok = ev.tokenizer
    assert ev.start == tok.bos_token_id == 1 and ev.eos == tok.eos_token_id == 2
    ids = tok.encode("a cat", add_special_tokens=False)
    seq = [tok.bos_token_id] + ids + [tok.eos_token_id]
    assert len(seq) <= 16
    out = ev.score(["a cat"])
    assert out["tokens"] == len(ids) + 1 and out["texts"] == 1
    expected = _manual_nll(ev.model, seq) / (len(seq) - 1)
    assert out["nll"] == pytest.approx(expected, rel=1e-5)
    assert out["ppl"] == pytest.approx(math.exp(expected), rel=1e-5)


def test_hf_long_text_uses_windows(hf_eval):
    ev = hf_eval
    tok = ev.tokenizer
    text = " ".join([SHORT] * 8)
    ids = tok.encode(text, add_special_tokens=False)
    seq = [1] + ids + [2]
    assert len(seq) > 2 * 16  # at least three windows
    out = ev.score([text])
    assert out["tokens"] == len(ids) + 1
    # Manual windows: the first 16 tokens, then start + the next 15 each time.
    total, count, pos = _manual_nll(ev.model, seq[:16]), 15, 16
    while pos < len(seq):
        part = [1] + seq[pos:pos + 15]
        total += _manual_nll(ev.model, part)
        count += len(part) - 1
        pos += 15
    assert count == len(ids) + 1
    assert out["nll"] == pytest.approx(total / count, rel=1e-5)
    # Two texts: the token-weighted mean of their totals; batching does not change it.
    both = ev.score(["a cat", text], batch_size=1)
    short_total = ev.score(["a cat"])["nll"] * ev.score(["a cat"])["tokens"]
    assert both["tokens"] == out["tokens"] + ev.score(["a cat"])["tokens"] and both["texts"] == 2
    assert both["nll"] == pytest.approx((total + short_total) / both["tokens"], rel=1e-5)
    assert ev.score(["a cat", text], batch_size=8)["nll"] == pytest.approx(both["nll"], rel=1e-5)


def test_hf_features_do_not_depend_on_batch_size(hf_eval):
    texts = ["a cat", SHORT, " ".join([SHORT] * 6), "the dog", ""]
    one = hf_eval.features(texts, batch_size=1)
    four = hf_eval.features(texts, batch_size=4)
    assert one.shape == (5, 32) and one.dtype == np.float32
    assert np.isfinite(one).all()
    np.testing.assert_allclose(one, four, atol=1e-5)
    assert not np.allclose(one[0], one[1], atol=1e-3)
    # The last real token of [start] + tokens, read from hidden_states[-1] directly.
    ids = [1] + hf_eval.tokenizer.encode(SHORT, add_special_tokens=False)
    with torch.no_grad():
        h = hf_eval.model(torch.tensor([ids]), output_hidden_states=True).hidden_states[-1][0, -1]
    np.testing.assert_allclose(one[1], h.numpy(), atol=1e-5)


def test_dlms_ar_run_matches_score_texts_and_features(ar_run):
    from dlms import DiffusionLM

    ev = load_evaluator(str(ar_run), device="cpu")
    lm = DiffusionLM.load_checkpoint(ar_run, device="cpu")
    assert ev.max_len == lm.model.spec.max_seq_len == 32
    texts = ["the chef", "a cat sat", SHORT]
    for t in texts:
        assert len(lm._start_tokens) + len(lm.tokenizer.encode(t, add_special_tokens=False)) + 1 <= ev.max_len
    out = ev.score(texts)
    ref = lm.score_texts(texts)
    assert out["tokens"] == ref["tokens"] and out["texts"] == 3
    assert out["nll"] == pytest.approx(ref["nll"], rel=1e-5)
    # A long text is windowed: every token after the start scored once.
    long_text = " ".join([SHORT] * 10)
    n = len(lm.tokenizer.encode(long_text, add_special_tokens=False))
    assert n + 2 > 32 and ev.score([long_text])["tokens"] == n + 1
    feats = ev.features(texts + [long_text], batch_size=1)
    assert feats.shape == (4, lm.model.spec.d_model) and np.isfinite(feats).all()
    np.testing.assert_allclose(feats, ev.features(texts + [long_text], batch_size=4), atol=1e-5)
    assert not np.allclose(feats[0], feats[1], atol=1e-3)


def test_masked_run_is_refused(tmp_path):
    from dlms.cli import main
    from tests.conftest import tiny_overrides

    assert main(["train", "--samples", "0", *tiny_overrides(tmp_path / "masked", "masked", steps=2)]) == 0
    with pytest.raises(DlmsError, match="'ar'"):
        load_evaluator(str(tmp_path / "masked"), device="cpu")


def test_unreachable_name_is_one_line_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DlmsError) as info:
        load_evaluator("no-such-org/no-such-model", device="cpu")
    message = str(info.value)
    assert "no-such-org/no-such-model" in message and "\n" not in message


def test_missing_path_and_non_model_folder(tmp_path):
    with pytest.raises(DlmsError, match="does not exist"):
        load_evaluator(str(tmp_path / "nowhere"), device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DlmsError) as info:
        load_evaluator(str(tmp_path / "empty"), device="cpu")
    assert "empty" in str(info.value) and "\n" not in str(info.value)


def test_empty_list_is_refused(hf_eval):
    with pytest.raises(DlmsError):
        hf_eval.score([])
    assert hf_eval.features([]).shape == (0, 32)
