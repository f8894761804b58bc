"""Byte-level BPE training, tokenizer loading and special ids."""

from __future__ import annotations

import pytest

from dlms.data.tokenizer import (
    encode_texts,
    ensure_special_tokens,
    load_tokenizer,
    special_ids,
    train_bpe_tokenizer,
)
from dlms.errors import ConfigError, DataError

CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "a stitch in time saves nine",
    "naïve café résumé — déjà vu, 日本語のテキスト",
    "tabs\tand  double  spaces\nand newlines",
    "numbers 12345 and symbols !@#$%^&*()",
] * 40

TRICKY = [
    "hello world",
    " leading space and trailing space ",
    "two\n\nnewlines\r\nand crlf",
    "unicode: ünïcödé 😀 中文",
    "   ",
    "never seen during training: zqxj ℵ₀ 🦀",
]


@pytest.fixture(scope="module")
def bpe(tmp_path_factory):
    out = tmp_path_factory.mktemp("bpe")
    return train_bpe_tokenizer(iter(CORPUS), vocab_size=320, out_dir=out), out


def test_bpe_round_trips_text_exactly(bpe):
    tok, _ = bpe
    for text in CORPUS[:5] + TRICKY:
        ids = tok.encode(text, add_special_tokens=False)
        assert tok.decode(ids) == text


def test_bpe_special_tokens_have_ids_0_to_3(bpe):
    tok, _ = bpe
    assert [tok.pad_token, tok.bos_token, tok.eos_token, tok.mask_token] == ["<pad>", "<bos>", "<eos>", "<mask>"]
    assert special_ids(tok) == {"pad": 0, "bos": 1, "eos": 2, "mask": 3, "vocab_size": len(tok)}


def test_bpe_vocab_size_respected(bpe):
    tok, _ = bpe
    assert len(tok) == 320  # the corpus has enough distinct pairs to fill the vocabulary
    small = train_bpe_tokenizer(["ab ab ab"], vocab_size=300)
    assert len(small) <= 300


def test_bpe_trains_from_a_one_shot_generator():
    consumed = []

    def gen():
        for text in CORPUS:
            consumed.append(1)
            yield text

    tok = train_bpe_tokenizer(gen(), vocab_size=280)
    assert len(consumed) == len(CORPUS)
    assert tok.decode(tok.encode("quick fox", add_special_tokens=False)) == "quick fox"


def test_bpe_rejects_too_small_vocab():
    with pytest.raises(ConfigError, match="260"):
        train_bpe_tokenizer(CORPUS, vocab_size=100)


def test_saved_bpe_reloads_with_autotokenizer(bpe):
    from transformers import AutoTokenizer

    tok, out = bpe
    again = AutoTokenizer.from_pretrained(str(out))
    assert special_ids(again) == special_ids(tok)
    assert again.mask_token == "<mask>" and again.pad_token == "<pad>"
    for text in TRICKY:
        assert again.encode(text, add_special_tokens=False) == tok.encode(text, add_special_tokens=False)
    loaded = load_tokenizer(str(out))
    assert loaded.encode("hello", add_special_tokens=False) == tok.encode("hello", add_special_tokens=False)


def _gpt2_like_folder(path):
    """A tiny tokenizer saved with only an eos token, like GPT-2."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=280,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(CORPUS, trainer=trainer)
    PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>").save_pretrained(str(path))
    return path


def test_load_tokenizer_adds_missing_special_tokens(tmp_path):
    folder = _gpt2_like_folder(tmp_path / "gpt2like")
    tok = load_tokenizer(str(folder))
    ids = special_ids(tok)
    assert tok.eos_token == "<|endoftext|>" and ids["eos"] == 0
    assert ids["bos"] == ids["eos"]  # GPT-2 style: eos doubles as bos
    assert tok.pad_token == "<pad>" and tok.mask_token == "<mask>"
    assert len({ids["pad"], ids["eos"], ids["mask"]}) == 3
    assert ids["vocab_size"] == len(tok) == 282  # two tokens added
    assert max(ids["pad"], ids["mask"]) < ids["vocab_size"]


def test_ensure_special_tokens_splits_pad_shared_with_eos(tmp_path):
    tok = load_tokenizer(str(_gpt2_like_folder(tmp_path / "g")))
    tok.pad_token = tok.eos_token
    ensure_special_tokens(tok)
    assert tok.pad_token_id != tok.eos_token_id


def test_load_tokenizer_unknown_hub_name_is_one_line_data_error(monkeypatch):
    import huggingface_hub.constants

    # Offline mode makes the (failing) Hub lookup immediate instead of retrying for a minute.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(DataError) as err:
        load_tokenizer("no-such-owner/no-such-tokenizer-xyz")
    msg = str(err.value)
    assert "\n" not in msg
    assert "no-such-owner/no-such-tokenizer-xyz" in msg and "local folder" in msg


def test_load_tokenizer_missing_local_path(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_tokenizer(str(tmp_path / "missing"))


def test_encode_texts_never_produces_special_ids_from_raw_text(bpe):
    tok, _ = bpe
    [ids] = encode_texts(tok, ["a literal <eos> and <pad> and <mask> in the text"])
    assert not set(ids) & {0, 1, 2, 3}
    assert tok.decode(ids) == "a literal <eos> and <pad> and <mask> in the text"
    # The tokenizer's own setting is restored afterwards.
    assert tok.backend_tokenizer.encode_special_tokens is False
