"""Figures of generated text: diversity, and fluency under an evaluator AR model."""
from __future__ import annotations

import math
from collections import Counter
from typing import Any, Sequence

from .text_metrics import distinct_n, self_bleu


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


def builtin_corpus_figures(texts: Sequence[str], labels: Sequence[str] | None = None,
                           column: str | None = None) -> dict[str, float]:
    """Grammatical fraction by the built-in corpus's exact checker, and with `labels` (one per
    text, values of label `column`) the fraction that is grammatical and expresses its label."""
    from ..data.corpus import check_texts, label_accuracy

    figures = {"grammatical": check_texts(list(texts))["grammatical"]}
    if labels is not None and column is not None:
        figures["label_accuracy"] = label_accuracy(list(texts), list(labels), column)
    return figures


def generation_figures(texts: Sequence[str], token_rows: Sequence[Sequence[int]], *, evaluator: Any = None,
                       builtin: bool = False, labels: Sequence[str] | None = None,
                       label_column: str | None = None, self_bleu_texts: int = 200) -> dict[str, float]:
    """The standard figures of a set of samples: their length (mean words, share of empty texts:
    a sampler can look good by writing less), unigram entropy, distinct-1/2/3, self-BLEU (on
    the first `self_bleu_texts`), perplexity under `evaluator` (see eval/evaluator.py), and on
    the built-in corpus grammaticality and, given `labels`, label accuracy."""
    words = [len(t.split()) for t in texts]
    figures: dict[str, float] = {
        "mean_words": sum(words) / max(len(words), 1),
        "empty_share": sum(w == 0 for w in words) / max(len(words), 1),
        "unigram_entropy": unigram_entropy(token_rows),
    }
    for n in (1, 2, 3):
        figures[f"distinct_{n}"] = distinct_n(texts, n)
    if len(texts) >= 2:
        figures["self_bleu"] = self_bleu(texts, max_texts=self_bleu_texts)
    if evaluator is not None:
        figures["gen_ppl"] = evaluator.score(texts)["ppl"]
    if builtin:
        figures.update(builtin_corpus_figures(texts, labels, label_column if labels is not None else None))
    return figures
