"""Figures of generated text: diversity, and fluency under an evaluator AR model."""
from __future__ import annotations

import math
from collections import Counter
from typing import Sequence


def unigram_entropy(token_rows: Sequence[Sequence[int]]) -> float:
    """Mean over samples of the entropy (nats) of each sample's own token frequencies.

    Degenerate, repetitive samples score low; the MDLM convention for sample diversity.
    """
    values = []
    for row in token_rows:
        if not row:
            continue
        counts = Counter(row)
        n = len(row)
        values.append(-sum(c / n * math.log(c / n) for c in counts.values()))
    return sum(values) / len(values) if values else 0.0


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct word n-grams over all n-grams of all texts (0 when there are none)."""
    grams, total = set(), 0
    for text in texts:
        words = text.split()
        for i in range(len(words) - n + 1):
            grams.add(tuple(words[i : i + n]))
            total += 1
    return len(grams) / total if total else 0.0


def builtin_corpus_figures(texts: Sequence[str], labels: Sequence[str] | None = None,
                           column: str | None = None) -> dict[str, float]:
    """Grammatical fraction by the built-in corpus's exact checker, and with `labels` (one per
    text, values of label `column`) the fraction that is grammatical and expresses its label."""
    from ..data.corpus import check_texts, label_accuracy

    figures = {"grammatical": check_texts(list(texts))["grammatical"]}
    if labels is not None and column is not None:
        figures["label_accuracy"] = label_accuracy(list(texts), list(labels), column)
    return figures
