"""Built-in corpus: short English reviews from a probabilistic grammar.

Texts are lowercase, space-separated words with a separate "." ending each
sentence, e.g. ``"the chef cooked a juicy steak perfectly . i loved it ."``.
Each text has one sentiment (``LABELS["sentiment"]``) and one topic
(``LABELS["topic"]``); ``LABELS["review"]`` names the pair (``"positive-food"``), for models
conditioned on both at once.  :func:`generate_examples` draws texts deterministically
by seed; :func:`check_text` is an exact recognizer of the same grammar that
also reads back the labels, for judging generated samples.
"""

from __future__ import annotations

from .checker import CheckResult, check_text, check_texts, label_accuracy, parses
from .grammar import (
    generate_examples,
    iter_examples,
    labels_are_determined,
    sentence_count_lower_bound,
    sentiment_neutral_words,
    vocabulary,
    write_corpus,
)
from .lexicon import SENTIMENTS, TOPICS

#: label names per attribute, sorted (like the label lists built from other data)
LABELS: dict[str, list[str]] = {
    "sentiment": sorted(SENTIMENTS),
    "topic": sorted(TOPICS),
    "review": [f"{s}-{t}" for s in sorted(SENTIMENTS) for t in sorted(TOPICS)],
}


def review_label(sentiment: str, topic: str) -> str:
    """The combined label of a text with this sentiment and topic ("positive-food")."""
    return f"{sentiment}-{topic}"

__all__ = [
    "LABELS",
    "CheckResult",
    "check_text",
    "check_texts",
    "generate_examples",
    "iter_examples",
    "label_accuracy",
    "labels_are_determined",
    "parses",
    "review_label",
    "sentence_count_lower_bound",
    "sentiment_neutral_words",
    "vocabulary",
    "write_corpus",
]
