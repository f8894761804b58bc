"""Tests of the built-in corpus: generator, grammar properties and exact checker."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from dlms.data.corpus import (
    LABELS,
    CheckResult,
    check_text,
    check_texts,
    generate_examples,
    iter_examples,
    label_accuracy,
    labels_are_determined,
    parses,
    review_label,
    sentence_count_lower_bound,
    vocabulary,
    write_corpus,
)
from dlms.data.corpus import grammar as G
from dlms.data.corpus import lexicon as L

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture(scope="module")
def examples() -> list[dict]:
    return generate_examples(2000, seed=123)


# --- generator -----------------------------------------------------------------


def test_determinism_and_seeds():
    a, b = generate_examples(300, seed=7), generate_examples(300, seed=7)
    assert a == b
    assert list(iter_examples(300, seed=7)) == a
    c = generate_examples(300, seed=8)
    assert sum(x["text"] != y["text"] for x, y in zip(a, c)) > 250
    assert generate_examples(0) == []


def test_determinism_independent_of_hash_seed():
    # a fresh interpreter with another hash seed must produce the same texts
    code = "import json; from dlms.data.corpus import generate_examples; print(json.dumps(generate_examples(50, 3)))"
    outs = []
    for hs in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hs, PYTHONPATH=str(SRC))
        res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        outs.append(json.loads(res.stdout))
    assert outs[0] == outs[1] == generate_examples(50, 3)


def test_example_format(examples):
    for ex in examples:
        assert set(ex) == {"text", "sentiment", "topic"}
        assert ex["sentiment"] in LABELS["sentiment"] and ex["topic"] in LABELS["topic"]
        toks = ex["text"].split(" ")
        assert ex["text"] == ex["text"].lower() and "" not in toks
        assert toks[-1] == "." and 1 <= toks.count(".") <= 2
        assert 4 <= len(toks) <= 25
    mean = sum(len(e["text"].split()) for e in examples) / len(examples)
    assert 8 <= mean <= 18


def test_write_corpus(tmp_path):
    path = write_corpus(tmp_path / "sub" / "corpus.jsonl", 40, seed=5)
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert rows == generate_examples(40, seed=5)


def test_label_balance():
    exs = generate_examples(5000, seed=0)
    topics = Counter(e["topic"] for e in exs)
    assert set(topics) == set(LABELS["topic"]) and len(LABELS["topic"]) >= 4
    assert min(topics.values()) >= 0.10 * len(exs)
    pos = sum(e["sentiment"] == "positive" for e in exs) / len(exs)
    assert 0.40 <= pos <= 0.60


# --- grammar properties ----------------------------------------------------------


def test_vocabulary_and_count():
    vocab = vocabulary()
    assert len(vocab) >= 500
    assert sentence_count_lower_bound() > 1_000_000
    # even one single-sentence pattern of one label pair passes a million
    one = G._count_by_length("<S positive food>")
    assert sum(one.values()) > 1_000_000
    # every generated word is in the vocabulary, and the lexicon is consistent
    assert {w for e in generate_examples(500, 9) for w in e["text"].split()} <= vocab
    L.check_lexicon()
    assert not vocab & L.ARTICLE_EXCEPTIONS


def _enumerate(symbol: str) -> set[tuple[str, ...]]:
    """All strings of an article-free symbol, by brute force."""
    if not symbol.startswith("<"):
        return {(symbol,)}
    out: set[tuple[str, ...]] = set()
    for _, rhs in G.RULES[symbol]:
        acc = {()}
        for x in rhs:
            acc = {a + b for a in acc for b in _enumerate(x)}
        out |= acc
    return out


@pytest.mark.parametrize("symbol", ["<S4 negative music>", "<COMMENT positive>", "<ADJT positive food>"])
def test_count_bound_is_a_lower_bound(symbol):
    exact = _enumerate(symbol)
    bound = sum(G._count_by_length(symbol).values())
    assert 0 < bound <= len(exact)
    # and the checker accepts each of them (as a text, for whole sentences)
    if symbol.startswith("<S4"):
        sample = random.Random(0).sample(sorted(exact), 200)
        assert all(check_text(" ".join(s)) == CheckResult(True, "negative", "music") for s in sample)


def test_labels_are_determined_by_grammar():
    assert labels_are_determined()


# --- checker: acceptance -----------------------------------------------------------


def test_generated_texts_are_grammatical_with_right_labels(examples):
    for ex in examples:
        assert parses(ex["text"]) == [(ex["sentiment"], ex["topic"])], ex
        r = check_text(ex["text"])
        assert r == CheckResult(True, ex["sentiment"], ex["topic"]), ex
    texts = [e["text"] for e in examples]
    assert check_texts(texts) == {"grammatical": 1.0, "n": len(texts)}
    assert label_accuracy(texts, [e["sentiment"] for e in examples], "sentiment") == 1.0
    assert label_accuracy(texts, [e["topic"] for e in examples], "topic") == 1.0
    reviews = [review_label(e["sentiment"], e["topic"]) for e in examples]
    assert set(reviews) <= set(LABELS["review"]) and len(LABELS["review"]) == 10
    assert label_accuracy(texts, reviews, "review") == 1.0


def test_whitespace_normalisation():
    text = "the pizza was really delicious ."
    assert check_text(text).grammatical
    assert check_text("  " + text + " \n").grammatical
    assert check_text("the  pizza\twas really\n delicious   .").grammatical


def test_optional_words_may_be_dropped():
    assert check_text("the new pizza was really delicious .").grammatical
    assert check_text("the pizza was delicious .").grammatical


# --- checker: rejection ------------------------------------------------------------

BAD = {
    "empty": "",
    "blank": "   \n ",
    "no final period": "the pizza was really delicious",
    "attached period": "the pizza was really delicious.",
    "uppercase": "The pizza was really delicious .",
    "unknown word": "the pizza was really yummy .",
    "wrong article a": "the chef cooked a omelette perfectly .",
    "wrong article an": "yesterday we ordered an tasty omelette .",
    "wrong article before adjective": "the chef cooked a old pizza perfectly .",
    "a with plural": "the chef cooked a pizzas perfectly .",
    "agreement noun-verb": "the chef cook the pizza perfectly .",
    "agreement plural-verb": "the chefs cooks the pizza perfectly .",
    "agreement copula": "the pizzas was delicious .",
    "agreement copula sg": "the pizza were delicious .",
    "agreement pronoun": "i loved the pizzas because it was crispy .",
    "agreement subject": "my friend love the pizza at the diner .",
    "tense mismatch": "i love the pizza because it was crispy .",
    "swapped words": "the pizza really was delicious .",
    "dropped noun": "the was really delicious .",
    "noun replaced by verb": "the cooked was really delicious .",
    "noun replaced by adverb": "the chef cooked a perfectly perfectly .",
    "mixed sentiment": "the pizza was delicious . the soup was bland .",
    "mixed sentiment comment": "the pizza was delicious . i will never come back .",
    "mixed topic": "the pizza was delicious . the match was thrilling .",
    "cross-topic words": "the chef cooked the match perfectly .",
    "cross-topic place": "i loved the pizza at the stadium .",
    "sentiment clash in sentence": "the rude chef cooked a pizza perfectly .",
    "comment alone": "it was great .",
    "three sentences": "the pizza was delicious . the soup was tasty . the cake was fresh .",
    "comment first": "it was great . the pizza was delicious .",
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_hand_made_bad_texts(name):
    assert check_text(BAD[name]) == CheckResult(False, None, None)


def test_hand_made_good_counterparts():
    # the minimal pairs of the bad texts above are accepted, with their labels
    good = {
        "the chef cooked an omelette perfectly .": ("positive", "food"),
        "the chef cooked an old pizza perfectly .": ("positive", "food"),
        "yesterday we ordered a tasty omelette .": ("positive", "food"),
        "yesterday we ordered an excellent omelette .": ("positive", "food"),
        "the chef cooks the pizza perfectly .": ("positive", "food"),
        "the chefs cook the pizza perfectly .": ("positive", "food"),
        "i loved the pizzas because they were crispy .": ("positive", "food"),
        "the pizza was bland . i will never come back .": ("negative", "food"),
        "the match was thrilling . it was great .": ("positive", "sports"),
        "i would not recommend the stadium to anyone .": ("negative", "sports"),
    }
    for text, (s, t) in good.items():
        assert check_text(text) == CheckResult(True, s, t), text


def _corrupt_rate(texts: list[str], corrupt, rng: random.Random) -> float:
    rejected = sum(not check_text(" ".join(corrupt(t.split(), rng))).grammatical for t in texts)
    return rejected / len(texts)


def _swap(toks, rng):
    i = rng.choice([i for i in range(len(toks) - 1) if toks[i] != toks[i + 1]])
    toks[i], toks[i + 1] = toks[i + 1], toks[i]
    return toks


# words that fill optional slots (dropping one may legitimately stay grammatical)
_OPTIONAL = set(L.MODIFIERS + L.INTENSIFIERS) | {w for s in L.SENTIMENTS for w in L.PERSON_ADJ[s] + L.GENERAL_ADJ[s]}


def _drop(toks, rng):
    i = rng.choice([i for i, w in enumerate(toks) if w not in _OPTIONAL])
    return toks[:i] + toks[i + 1 :]


_NOUNS = {f for d in (L.THINGS, L.AGENTS) for ws in d.values() for w in ws for f in (w, L.plural(w))}
_NON_NOUNS = sorted(
    {w for ws in L.MANNER_ADV.values() for w in ws}
    | {f for d in (L.LIKE_VERBS, L.ACTION_VERBS) for vs in d.values() for v in vs for f in v}
    | {w for d in L.TOPIC_ADJ.values() for ws in d.values() for w in ws}
)


def _replace_noun(toks, rng):
    i = rng.choice([i for i, w in enumerate(toks) if w in _NOUNS] or [0])
    toks[i] = rng.choice(_NON_NOUNS)
    return toks


def _salad(toks, rng, vocab=sorted(vocabulary())):
    return [rng.choice(vocab) for _ in toks]


def _mix(toks, rng, pool=generate_examples(400, seed=99)):
    # append a grammatical sentence with another sentiment or topic
    first = " ".join(toks)
    mine = check_text(first)
    other = rng.choice([e for e in pool if (e["sentiment"], e["topic"]) != (mine.sentiment, mine.topic)])
    sent = other["text"].split(" . ")[0].rstrip(" .") + " ."
    return (first.split(" . ")[0].rstrip(" .") + " . " + sent).split()


@pytest.mark.parametrize("corrupt", [_swap, _drop, _replace_noun, _salad, _mix])
def test_random_corruptions_rejected(examples, corrupt):
    rate = _corrupt_rate([e["text"] for e in examples[:1000]], corrupt, random.Random(1))
    assert rate >= 0.95, (corrupt.__name__, rate)


def test_summaries():
    texts = ["the pizza was delicious .", "the pizza was delicious", "the match was predictable ."]
    assert check_texts(texts) == {"grammatical": pytest.approx(2 / 3), "n": 3}
    assert label_accuracy(texts, ["positive", "positive", "positive"], "sentiment") == pytest.approx(1 / 3)
    assert label_accuracy(texts, ["food", "food", "sports"], "topic") == pytest.approx(2 / 3)
    # "review" is the pair: the third text is negative sports, so only the first matches
    assert label_accuracy(texts, ["positive-food", "positive-food", "positive-sports"], "review") == pytest.approx(1 / 3)
    assert check_texts([]) == {"grammatical": 0.0, "n": 0}
    with pytest.raises(ValueError):
        label_accuracy(texts, ["food"], "topic")
    with pytest.raises(ValueError):
        label_accuracy(texts, ["food"] * 3, "colour")
