"""Text-level metrics against hand-computed values."""
from __future__ import annotations

import math

import numpy as np
import pytest
import sacrebleu

from dlms.eval import generation
from dlms.eval.text_metrics import corpus_bleu, distinct_n, mauve_score, rouge, self_bleu


# ---------------------------------------------------------------- distinct-n

def test_distinct_n_hand_computed():
    texts = ["a b a", "a b c"]
    # unigrams: a b a a b c -> 6 in all, {a, b, c} distinct
    assert distinct_n(texts, 1) == pytest.approx(3 / 6)
    # bigrams: (a b) (b a) | (a b) (b c) -> 4 in all, 3 distinct
    assert distinct_n(texts, 2) == pytest.approx(3 / 4)
    # trigrams: (a b a) | (a b c) -> 2 in all, both distinct; none cross the text boundary
    assert distinct_n(texts, 3) == pytest.approx(1.0)
    # no text has 4 words
    assert distinct_n(texts, 4) == 0.0
    assert distinct_n([], 1) == 0.0


def test_distinct_n_matches_generation_module():
    texts = ["the cat sat on the mat", "the dog sat", "", "a a a a"]
    for n in (1, 2):
        assert distinct_n(texts, n) == generation.distinct_n(texts, n)


# ---------------------------------------------------------------- self-BLEU

def test_self_bleu_identical_texts_is_100():
    assert self_bleu(["the cat sat on the mat"] * 3) == pytest.approx(100.0)


def test_self_bleu_disjoint_texts_is_zero():
    assert self_bleu(["a b c d", "e f g h", "i j k l"]) < 1.0


def test_self_bleu_partial_overlap_hand_computed():
    # Each text against the other: 1-gram 3/4, 2-gram 2/3, 3-gram 1/2, 4-gram 0/1, which
    # sacrebleu's 'exp' smoothing turns into 1/(2*1); equal lengths, so no brevity penalty.
    expected = 100 * (3 / 4 * 2 / 3 * 1 / 2 * 1 / 2) ** 0.25  # = 100 * 2**-0.75 ~ 59.46
    assert self_bleu(["a b c d", "a b c e"]) == pytest.approx(expected, rel=1e-9)
    assert 0 < expected < 100


def test_self_bleu_max_texts_truncates():
    texts = ["a b c d", "a b c d", "w x y z"]
    assert self_bleu(texts, max_texts=2) == pytest.approx(100.0)
    assert self_bleu(texts) < 99.0


def test_self_bleu_needs_two_texts():
    with pytest.raises(ValueError, match="at least 2"):
        self_bleu(["only one"])
    with pytest.raises(ValueError, match="at least 2"):
        self_bleu(["one", "two", "three"], max_texts=1)


# ---------------------------------------------------------------- corpus BLEU

def test_corpus_bleu_exact_match_is_100():
    hyps = ["the cat sat on the mat", "a dog ran in the park"]
    assert corpus_bleu(hyps, [[h] for h in hyps]) == pytest.approx(100.0)


def test_corpus_bleu_matches_sacrebleu():
    hyps = ["the cat sat on a mat today", "a dog was running in the park"]
    refs = [["the cat sat on the mat", "there is a cat on the mat"],
            ["a dog ran in the park", "the dog runs in a park"]]
    streams = [[r[0] for r in refs], [r[1] for r in refs]]  # sacrebleu's stream layout
    expected = sacrebleu.corpus_bleu(hyps, streams).score
    assert 0 < expected < 100
    assert corpus_bleu(hyps, refs) == pytest.approx(expected)


def test_corpus_bleu_ragged_references():
    hyps = ["the cat sat on the mat", "a dog ran"]
    ragged = [["the cat sat on the mat", "a cat sat on a mat"], ["a dog ran in the park"]]
    # Repeating a reference changes neither the clipped n-gram counts nor the closest length,
    # so the None-padded ragged case must equal the padded-by-repetition one.
    repeated = [["the cat sat on the mat", "a cat sat on a mat"],
                ["a dog ran in the park", "a dog ran in the park"]]
    value = corpus_bleu(hyps, ragged)
    assert value == pytest.approx(corpus_bleu(hyps, repeated))
    # Padding with '' instead would count an empty reference (length 0, closest to the short
    # hypothesis) and drop the brevity penalty: a different number, so the check above bites.
    empty_padded = sacrebleu.corpus_bleu(hyps, [[r[0] for r in ragged], [ragged[0][1], ""]]).score
    assert value != pytest.approx(empty_padded)


def test_corpus_bleu_validates():
    with pytest.raises(ValueError, match="2 hypotheses but 1"):
        corpus_bleu(["a b", "c d"], [["a b"]])
    with pytest.raises(ValueError, match="no reference"):
        corpus_bleu(["a b"], [[]])


# ---------------------------------------------------------------- ROUGE

def test_rouge_exact_match_is_one():
    scores = rouge(["the cat sat on the mat"], [["the cat sat on the mat"]])
    assert set(scores) == {"rouge1", "rouge2", "rougeL"}
    for value in scores.values():
        assert value == pytest.approx(1.0)


def test_rouge_hand_computed_pair():
    scores = rouge(["the cat sat"], [["the cat ate"]])
    # unigrams: overlap {the, cat} = 2 of 3 each side -> P = R = F1 = 2/3
    assert scores["rouge1"] == pytest.approx(2 / 3)
    # bigrams: {the cat, cat sat} vs {the cat, cat ate}: overlap 1 of 2 -> F1 = 1/2
    assert scores["rouge2"] == pytest.approx(1 / 2)
    # longest common subsequence "the cat" = 2 of 3 -> F1 = 2/3
    assert scores["rougeL"] == pytest.approx(2 / 3)


def test_rouge_uses_stemmer():
    # "cats" (over 3 characters) is Porter-stemmed to "cat": a full match.
    assert rouge(["the cats sat"], [["the cat sat"]])["rouge1"] == pytest.approx(1.0)


def test_rouge_best_reference_and_mean():
    # first hypothesis: refs give rouge1 1/3 ("the") and 2/3 ("the cat"): the best, 2/3, is kept
    # second hypothesis: exact match with its second reference -> 1
    scores = rouge(["the cat sat", "a dog ran"],
                   [["the dog ate", "the cat ate"], ["birds fly high", "a dog ran"]])
    assert scores["rouge1"] == pytest.approx((2 / 3 + 1.0) / 2)
    assert scores["rouge2"] == pytest.approx((1 / 2 + 1.0) / 2)


def test_rouge_validates_lengths():
    with pytest.raises(ValueError):
        rouge(["a", "b"], [["a"]])


# ---------------------------------------------------------------- MAUVE

def test_mauve_same_distribution_beats_shifted():
    rng = np.random.default_rng(0)
    dim = 8
    human = rng.normal(size=(40, dim))
    same = rng.normal(size=(40, dim))
    shifted = rng.normal(size=(40, dim)) + 5.0
    close = mauve_score(human, same, seed=0)
    far = mauve_score(human, shifted, seed=0)
    assert 0.0 <= far < close <= 1.0
    assert far < 0.5


def test_mauve_identical_arrays_near_one():
    features = np.random.default_rng(1).normal(size=(40, 8))
    assert mauve_score(features, features.copy(), seed=0) > 0.9


def test_mauve_validates():
    rng = np.random.default_rng(2)
    with pytest.raises(ValueError, match="dimensions differ"):
        mauve_score(rng.normal(size=(10, 4)), rng.normal(size=(10, 5)))
    with pytest.raises(ValueError, match="at least 2"):
        mauve_score(rng.normal(size=(1, 4)), rng.normal(size=(10, 4)))
    assert math.isfinite(mauve_score(rng.normal(size=(5, 4)), rng.normal(size=(5, 4)), num_buckets=2))
