"""Text-level quality metrics: diversity, overlap with references, and MAUVE.

Pure functions over lists of strings (or, for MAUVE, arrays of feature vectors); nothing here
loads or runs a model. The heavy third-party libraries are imported inside the functions so that
importing this module stays cheap (``mauve`` pulls in faiss, and torch/transformers when present).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct-n: distinct word n-grams over the total number of word n-grams.

    Words are ``str.split()`` tokens (whitespace split, case kept). The n-grams of every text are
    pooled: the numerator is the size of the set of n-grams over all texts, the denominator the
    count of all n-gram occurrences over all texts. N-grams never cross text boundaries. Returns
    0.0 when there are no n-grams at all (e.g. every text is shorter than ``n`` words).
    Same definition as ``dlms.eval.generation.distinct_n``.
    """
    if n < 1:
        raise ValueError(f"distinct_n: n must be >= 1, got {n}")
    grams: set[tuple[str, ...]] = set()
    total = 0
    for text in texts:
        words = text.split()
        for i in range(len(words) - n + 1):
            grams.add(tuple(words[i : i + n]))
            total += 1
    return len(grams) / total if total else 0.0


def self_bleu(texts: Sequence[str], max_texts: int | None = None) -> float:
    """Self-BLEU: mean over texts of the sentence BLEU of each text against all the others.

    Takes the first ``max_texts`` texts (all when None); for each text ``t_i`` computes
    ``sacrebleu.metrics.BLEU(effective_order=True).sentence_score(t_i, [t_j for j != i]).score``
    (sacrebleu's default 13a tokenization and 'exp' smoothing, 0..100 scale) and returns the
    arithmetic mean. Lower means a more diverse set. Cost is quadratic in the number of texts,
    hence ``max_texts``. Raises ValueError with fewer than two texts (after truncation).
    """
    from sacrebleu.metrics import BLEU

    if max_texts is not None:
        texts = texts[:max_texts]
    texts = list(texts)
    if len(texts) < 2:
        raise ValueError(
            f"self_bleu needs at least 2 texts (each is scored against the others), got {len(texts)}"
        )
    # effective_order: short texts lacking higher-order n-grams are not zeroed by the missing orders.
    bleu = BLEU(effective_order=True)
    scores = [
        bleu.sentence_score(text, texts[:i] + texts[i + 1 :]).score for i, text in enumerate(texts)
    ]
    return float(np.mean(scores))


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Corpus BLEU (sacrebleu defaults: 13a tokenization, 'exp' smoothing, 0..100 scale).

    ``references[i]`` is the list of references of ``hypotheses[i]``; hypotheses may have
    different numbers of references. sacrebleu takes references as reference *streams* (stream k
    holds the k-th reference of every segment), so the per-hypothesis lists are transposed into
    streams and the missing entries of shorter lists are padded with ``None``, which sacrebleu 2.x
    drops per segment (it supports a variable number of references that way; an empty string
    would instead count as a real, empty reference). Raises ValueError when the two lists differ
    in length, are empty, or a hypothesis has no reference.
    """
    from sacrebleu.metrics import BLEU

    if len(hypotheses) != len(references):
        raise ValueError(
            f"corpus_bleu: {len(hypotheses)} hypotheses but {len(references)} reference lists"
        )
    if not hypotheses:
        raise ValueError("corpus_bleu: no hypotheses given")
    for i, refs in enumerate(references):
        if isinstance(refs, str):
            # A bare string would be read as a list of characters.
            raise ValueError(f"corpus_bleu: references[{i}] must be a list of strings, not a string")
        if len(refs) == 0:
            raise ValueError(f"corpus_bleu: hypothesis {i} has no reference")
    num_streams = max(len(refs) for refs in references)
    streams = [
        [refs[k] if k < len(refs) else None for refs in references] for k in range(num_streams)
    ]
    return float(BLEU().corpus_score(list(hypotheses), streams).score)


def rouge(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """Mean ROUGE-1, ROUGE-2 and ROUGE-L F1 (0..1) of hypotheses against their references.

    Uses ``rouge_score.rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)``
    (lowercases, keeps [a-z0-9] tokens, Porter-stems tokens longer than 3 characters). For each
    hypothesis and each ROUGE type, the F1 is the best over that hypothesis's references
    (``score_multi``); the result is the mean over hypotheses, keys "rouge1", "rouge2", "rougeL".
    Raises ValueError when the lists differ in length, are empty, or a hypothesis has no reference.
    """
    from rouge_score import rouge_scorer

    if len(hypotheses) != len(references):
        raise ValueError(f"rouge: {len(hypotheses)} hypotheses but {len(references)} reference lists")
    if not hypotheses:
        raise ValueError("rouge: no hypotheses given")
    types = ["rouge1", "rouge2", "rougeL"]
    scorer = rouge_scorer.RougeScorer(types, use_stemmer=True)
    sums = dict.fromkeys(types, 0.0)
    for i, (hyp, refs) in enumerate(zip(hypotheses, references)):
        if isinstance(refs, str):
            raise ValueError(f"rouge: references[{i}] must be a list of strings, not a string")
        if len(refs) == 0:
            raise ValueError(f"rouge: hypothesis {i} has no reference")
        # score_multi(targets, prediction) keeps, per type, the reference with the best F1.
        best = scorer.score_multi(list(refs), hyp)
        for t in types:
            sums[t] += best[t].fmeasure
    return {t: sums[t] / len(hypotheses) for t in types}


def mauve_score(
    p_features: np.ndarray,
    q_features: np.ndarray,
    *,
    seed: int = 0,
    num_buckets: int | str = "auto",
    kmeans_num_redo: int = 5,
    kmeans_max_iter: int = 500,
) -> float:
    """MAUVE (Pillutla et al., 2021) between two sets of feature vectors; in [0, 1], higher = closer.

    ``p_features`` ([N, D]: features of human text) and ``q_features`` ([M, D]: features of model
    text) go to ``mauve.compute_mauve(p_features=..., q_features=..., device_id=-1,
    verbose=False, ...)``, which L2-normalises the vectors, reduces them by PCA (90% explained
    variance), quantises both sets jointly with k-means into ``num_buckets`` clusters, and returns
    the area under the divergence frontier of the two cluster histograms (scaling constant 5);
    this returns its ``.mauve`` (the unsmoothed score). ``num_buckets="auto"`` means
    ``max(2, min(N, M) // 10)`` (mauve's own "auto" rounds instead of flooring).
    ``kmeans_num_redo``/``kmeans_max_iter`` are mauve's k-means restarts and iteration cap (its
    defaults; lower them to trade exactness for speed). Raises ValueError when the arrays are not
    2-D, their feature dimensions differ, or either has fewer than 2 rows.
    """
    p = np.asarray(p_features, dtype=np.float32)
    q = np.asarray(q_features, dtype=np.float32)
    if p.ndim != 2 or q.ndim != 2:
        raise ValueError(f"mauve_score: features must be 2-D [N, D] arrays, got shapes {p.shape} and {q.shape}")
    if p.shape[1] != q.shape[1]:
        raise ValueError(
            f"mauve_score: feature dimensions differ: p has D={p.shape[1]}, q has D={q.shape[1]}"
        )
    if p.shape[0] < 2 or q.shape[0] < 2:
        raise ValueError(
            f"mauve_score: each side needs at least 2 feature rows, got {p.shape[0]} (p) and {q.shape[0]} (q)"
        )
    if num_buckets == "auto":
        # MAUVE's heuristic of ~10 samples per bucket; at least 2 buckets so the histograms can differ.
        num_buckets = max(2, min(p.shape[0], q.shape[0]) // 10)
    elif not isinstance(num_buckets, int) or num_buckets < 2:
        raise ValueError(f'mauve_score: num_buckets must be an int >= 2 or "auto", got {num_buckets!r}')

    import mauve  # imported here: it loads faiss (and torch/transformers when installed)

    out = mauve.compute_mauve(p_features=p, q_features=q, num_buckets=num_buckets, kmeans_num_redo=kmeans_num_redo,
                              kmeans_max_iter=kmeans_max_iter, seed=seed, device_id=-1, verbose=False)
    return float(out.mauve)
