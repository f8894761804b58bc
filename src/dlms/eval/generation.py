"""Figures of generated text: length, diversity, and fluency under an evaluator AR model.

Sample quality is only comparable at the data's length and diversity: a sampler can look fluent
or grammatical by writing less or repeating itself. So every set of samples is reported with its
length (mean words, share of empty texts) and unigram entropy, and, given validation texts drawn
the same way (`data_texts`, see `data_reference_texts`), the data's own figures computed by the same
functions, the gaps between them and the verdict `at_data_length`:

- `data_mean_words`, `data_unigram_entropy`: the same figures of the validation texts;
- `length_gap = mean_words / data_mean_words - 1`, `entropy_gap = unigram_entropy /
  data_unigram_entropy - 1` (signed; -0.5 means half the data's);
- `at_data_length`: |length_gap| <= 0.10 and |entropy_gap| <= 0.05. A quality claim (perplexity,
  grammaticality, MAUVE, ...) holds only for samples at the data's length.

Texts become token rows one way for samples and data alike (`text_token_rows`): the text (as
`DiffusionLM.decode` gives it: start tokens, padding and everything from the first end-of-text
dropped) tokenized by the model's own tokenizer without special tokens, any special-token id
removed.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Any, Sequence

from .text_metrics import distinct_n, self_bleu

LENGTH_TOLERANCE = 0.10  # |length_gap| at most this: at the data's length
ENTROPY_TOLERANCE = 0.05  # |entropy_gap| at most this: at the data's diversity
DIVERSITY_TOLERANCE = 0.10  # |distinct_2_gap| at most this: as varied across samples as the data
DATA_TEXTS = 1000  # validation texts the data's figures are computed on (more when there are more samples)
_EPS = 1e-9  # the bounds are inclusive: 11 words against 10 is a gap of 0.10, not 0.1000000001


def unigram_entropy(token_rows: Sequence[Sequence[int]]) -> float:
    """Mean over samples of the entropy (nats) of each sample's own token frequencies.

    Degenerate, repetitive samples score low; the MDLM convention for sample diversity. Empty
    rows are skipped (the share of empty texts is reported beside it). The figure grows with the
    length of the rows (a row of n distinct tokens has entropy log n), so it is only comparable
    between sets of rows of about the same length: compare it with the data's own figure
    (`data_unigram_entropy`) at the data's length, never on its own. Pass the rows of
    `text_token_rows` (no special tokens, no padding).
    """
    values = []
    for row in token_rows:
        if not row:
            continue
        counts = Counter(row)
        n = len(row)
        values.append(-sum(c / n * math.log(c / n) for c in counts.values()))
    return sum(values) / len(values) if values else 0.0


def text_token_rows(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """The rows `unigram_entropy` is computed on: each text's tokens by `tokenizer`, without
    special tokens (none added, and any special-token id the text spells out dropped)."""
    special = set(getattr(tokenizer, "all_special_ids", None) or [])
    return [[int(t) for t in tokenizer.encode(text, add_special_tokens=False) if int(t) not in special]
            for text in texts]


def length_figures(texts: Sequence[str], rows: Sequence[Sequence[int]]) -> dict[str, float]:
    """Mean words (whitespace-separated), share of empty texts and unigram entropy of rows."""
    words = [len(t.split()) for t in texts]
    return {
        "mean_words": sum(words) / max(len(words), 1),
        "empty_share": sum(w == 0 for w in words) / max(len(words), 1),
        "unigram_entropy": unigram_entropy(rows),
    }


def _gap(value: float, reference: float) -> float | None:
    return value / reference - 1.0 if reference > 0 else None


def data_comparison(samples: dict[str, float], data: dict[str, float]) -> dict[str, Any]:
    """The data's figures and the gaps of the samples' to them (see the module doc);
    `samples` and `data` are `length_figures` of each. A gap is None where the data's figure is 0
    (nothing to compare with), and then the samples are not `at_data_length`."""
    length_gap = _gap(samples["mean_words"], data["mean_words"])
    entropy_gap = _gap(samples["unigram_entropy"], data["unigram_entropy"])
    at_length = (length_gap is not None and entropy_gap is not None
                 and abs(length_gap) <= LENGTH_TOLERANCE + _EPS and abs(entropy_gap) <= ENTROPY_TOLERANCE + _EPS)
    return {"data_samples": data.get("texts"), "data_mean_words": data["mean_words"],
            "data_unigram_entropy": data["unigram_entropy"], "length_gap": length_gap, "entropy_gap": entropy_gap,
            "at_data_length": bool(at_length)}


def data_length_note(figures: dict[str, Any]) -> str | None:
    """One line when samples are not at the data's length or diversity (None when they are, or
    when there are no data figures)."""
    if "at_data_length" not in figures or figures["at_data_length"]:
        return None

    def pct(gap):
        return "undefined" if gap is None else f"{gap:+.0%}"

    return (f"not at the data's length: mean words {figures['mean_words']:.1f} against the data's "
            f"{figures['data_mean_words']:.1f} ({pct(figures['length_gap'])}, allowed +-{LENGTH_TOLERANCE:.0%}), "
            f"unigram entropy {figures['unigram_entropy']:.3f} against {figures['data_unigram_entropy']:.3f} "
            f"({pct(figures['entropy_gap'])}, allowed +-{ENTROPY_TOLERANCE:.0%}); "
            "the quality figures of these samples support no claim")


def data_diversity_note(figures: dict[str, Any]) -> str | None:
    """One line when samples are less (or more) varied across samples than the data."""
    if "at_data_diversity" not in figures or figures["at_data_diversity"]:
        return None
    gap = figures["distinct_2_gap"]
    return (f"not at the data's diversity across samples: distinct-2 {figures['distinct_2']:.3f} against the "
            f"data's {figures['data_distinct_2']:.3f} ({'undefined' if gap is None else f'{gap:+.0%}'}, allowed "
            f"+-{DIVERSITY_TOLERANCE:.0%}); a sampler that repeats itself can look fluent")


def data_reference_texts(lm, data: Any = None, n: int = DATA_TEXTS, labels: Sequence[Any] | None = None) -> list[str]:
    """`n` validation texts in the form of `lm`'s samples, to compute the data's figures on.

    `data`: the TokenizedDataset (default: the run's own, `lm.dataset()`). Rows are taken evenly
    spread over the validation split and turned into text by `lm.decode`, exactly as samples are:
    - padded layout: each row is one example, `[bos] + tokens + [eos] + pad` cut at seq_len, as a
      sample is `[bos]` + at most seq_len - 1 tokens cut at its first eos;
    - packed layout: a sample is a document from its start (it starts at an eos, the document
      boundary) cut at seq_len - 1 tokens, so each data row is the stream from an eos (the first
      at or after the chosen row's start that no earlier row took) on, seq_len tokens, cut at the
      next eos by `decode`; a document cut by the end of the split is not used.
    `labels`: the classes the samples were drawn for; when they are a strict subset of the
    classes of a padded split with labels, only rows of those classes are used.
    """
    import numpy as np
    import torch

    data = data if data is not None else lm.dataset()
    split = data.val
    if len(split) == 0 or n < 1:
        return []
    index = np.arange(len(split))
    column = lm.cfg.data.label_column
    if labels and column and split.labels is not None and column in split.label_columns:
        names = [str(v) for v in data.label_names.get(column, [])]
        wanted = {names.index(str(label)) for label in set(labels) if str(label) in names}
        if wanted and len(wanted) < len(names):
            keep = np.isin(np.asarray(split.labels[:, split.label_index(column)]), sorted(wanted))
            if keep.any():
                index = index[keep]
    n = min(n, len(index))
    picks = index[np.unique(np.linspace(0, len(index) - 1, n).round().astype(int))]
    if lm.cfg.data.layout == "padded":
        rows = np.asarray(split.ids[picks], dtype=np.int64)
    else:
        rows = _packed_rows(split, picks, lm.method.special.eos, lm.method.special.pad)
        if len(rows) == 0:
            return []
    return lm.decode(torch.as_tensor(rows, dtype=torch.long))


def _packed_rows(split, picks, eos: int, pad: int, max_rows: int = 64):
    """For each picked row r: the stream from the first eos at or after r's start not used yet, seq_len
    tokens (padded when the document ends within them). A pick is skipped when no such eos is found
    within `max_rows` rows, or when its document runs into the end of the split."""
    import numpy as np

    seq_len, rows, used = split.seq_len, [], set()
    for r in (int(r) for r in picks):
        stream, end = np.zeros(0, dtype=np.int64), r
        while end < len(split) and end - r < max_rows:
            stream = np.concatenate([stream, np.asarray(split.ids[end], dtype=np.int64).reshape(-1)])
            end += 1
            free = [int(e) for e in np.flatnonzero(stream == eos) if r * seq_len + int(e) not in used]
            if free and (len(stream) - free[0] >= seq_len or bool(np.any(stream[free[0] + 1:] == eos))):
                used.add(r * seq_len + free[0])
                row = stream[free[0]:free[0] + seq_len]
                rows.append(np.pad(row, (0, seq_len - len(row)), constant_values=pad))
                break
    return np.stack(rows) if rows else np.zeros((0, seq_len), dtype=np.int64)


def builtin_corpus_figures(texts: Sequence[str], labels: Sequence[str] | None = None,
                           column: str | None = None) -> dict[str, float]:
    """Grammatical fraction by the built-in corpus's exact checker, and with `labels` (one per
    text, values of label `column`) the fraction that is grammatical and expresses its label."""
    from ..data.corpus import check_texts, label_accuracy

    figures = {"grammatical": check_texts(list(texts))["grammatical"]}
    if labels is not None and column is not None:
        figures["label_accuracy"] = label_accuracy(list(texts), list(labels), column)
    return figures


def generation_figures(texts: Sequence[str], token_rows: Sequence[Sequence[int]] | None = None, *,
                       tokenizer: Any = None, data_texts: Sequence[str] | None = None,
                       data_token_rows: Sequence[Sequence[int]] | None = None, evaluator: Any = None,
                       builtin: bool = False, labels: Sequence[str] | None = None,
                       label_column: str | None = None, self_bleu_texts: int = 200) -> dict[str, Any]:
    """The standard figures of a set of samples: their length (mean words, share of empty texts:
    a sampler can look good by writing less), unigram entropy, and given `data_texts` the data's
    own length and entropy with the gaps and `at_data_length` (module doc); distinct-1/2/3,
    self-BLEU (on the first `self_bleu_texts`), perplexity under `evaluator` (see
    eval/evaluator.py; never one of the models compared), and on the built-in corpus
    grammaticality and, given `labels`, label accuracy.

    Token rows (samples' and data's) are made by `text_token_rows(tokenizer, ...)` unless given.
    """
    if token_rows is None or (data_texts is not None and data_token_rows is None):
        if tokenizer is None:
            raise TypeError("generation_figures needs token rows or a tokenizer to make them")
    rows = text_token_rows(tokenizer, texts) if token_rows is None else token_rows
    figures: dict[str, Any] = length_figures(texts, rows)
    if data_texts is not None:
        data_rows = text_token_rows(tokenizer, data_texts) if data_token_rows is None else data_token_rows
        data = {**length_figures(data_texts, data_rows), "texts": len(data_texts)}
        figures.update(data_comparison(figures, data))
    for n in (1, 2, 3):
        figures[f"distinct_{n}"] = distinct_n(texts, n)
    if data_texts is not None and len(data_texts) and texts:
        # Diversity across samples, against as many data texts: unigram entropy is within each
        # text, and a mode-seeking sampler can match it while writing the same texts again.
        figures["data_distinct_2"] = distinct_n(list(data_texts[: len(texts)]), 2)
        gap = _gap(figures["distinct_2"], figures["data_distinct_2"])
        figures["distinct_2_gap"] = gap
        figures["at_data_diversity"] = gap is not None and abs(gap) <= DIVERSITY_TOLERANCE + _EPS
    if len(texts) >= 2:
        figures["self_bleu"] = self_bleu(texts, max_texts=self_bleu_texts)
    if evaluator is not None:
        figures["gen_ppl"] = evaluator.score(texts)["ppl"]
    if builtin:
        figures.update(builtin_corpus_figures(texts, labels, label_column if labels is not None else None))
    return figures
