"""DGLM's semantic space: cached embeddings, the standardisation statistics, prefix / continuation cuts."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dlms.dglm.embeddings import Standardizer, encode_cached
from dlms.dglm.pairs import cut_pairs
from dlms.errors import CheckpointError, DataError

TEXTS = ["the food was great .", "the service was slow .", "a cat sat on the mat ."]


class CountingEncoder:
    """Wraps a SentenceEncoder and counts the texts it encodes."""

    def __init__(self, inner):
        self.inner, self.encoded = inner, 0
        self.name, self.model, self.dim = inner.name, inner.model, inner.dim

    def encode(self, texts, batch_size=64, show_progress=False):
        self.encoded += len(texts)
        return self.inner.encode(texts, batch_size)


def test_embeddings_are_cached_by_encoder_and_texts(tiny_encoder_folder, tmp_path):
    from dlms.dglm.encoder import load_sentence_encoder

    enc = CountingEncoder(load_sentence_encoder(str(tiny_encoder_folder)))
    first = encode_cached(enc, TEXTS, tmp_path)
    again = encode_cached(enc, TEXTS, tmp_path)
    assert enc.encoded == len(TEXTS)  # the second call read the cache
    np.testing.assert_array_equal(first, again)
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, rtol=1e-5)
    encode_cached(enc, TEXTS[:2], tmp_path)
    assert enc.encoded == len(TEXTS) + 2  # other texts: a new entry
    with torch.no_grad():  # other weights: a new entry too
        next(enc.model.parameters()).add_(0.01)
    encode_cached(enc, TEXTS, tmp_path)
    assert enc.encoded == 2 * len(TEXTS) + 2
    with pytest.raises(DataError, match="empty"):
        encode_cached(enc, [], tmp_path)


def test_standardizer_round_trips_and_travels_as_safetensors(tmp_path):
    x = torch.randn(200, 6, generator=torch.Generator().manual_seed(0)) * torch.arange(1, 7) + 3.0
    s = Standardizer.fit(x.numpy())
    z = s.transform(x)
    torch.testing.assert_close(z.mean(0), torch.zeros(6), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std(0), torch.ones(6), atol=1e-5, rtol=0)
    torch.testing.assert_close(s.inverse(z), x, atol=1e-5, rtol=1e-5)
    s.save(tmp_path / "stats.safetensors")
    loaded = Standardizer.load(tmp_path / "stats.safetensors")
    torch.testing.assert_close(loaded.mean, s.mean)
    torch.testing.assert_close(loaded.std, s.std)
    with pytest.raises(DataError, match="width 5"):
        s.transform(torch.zeros(2, 5))
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="damaged"):
        Standardizer.load(tmp_path / "bad.safetensors")


def test_pairs_cut_at_word_boundaries_reproducibly():
    texts = ["one two three four five six", "short", "a b", "x y z w"]
    pairs = cut_pairs(texts, seed=3, min_words=1)
    assert len(pairs) == 3  # "short" has one word
    for (prefix, continuation), text in zip(pairs, [t for t in texts if len(t.split()) >= 2]):
        assert f"{prefix} {continuation}" == text and prefix and continuation
    assert cut_pairs(texts, seed=3) == pairs
    cuts = {cut_pairs(["one two three four five six"], seed=s)[0][0] for s in range(40)}
    assert len(cuts) == 5  # every boundary gets chosen
    assert cut_pairs(texts, seed=0, min_words=3) == [(p, c) for p, c in cut_pairs(texts[:1], seed=0, min_words=3)]
