"""Figures of generated responses against references: pure functions over strings.

One response per distinct prompt, scored against every reference of that prompt
(`group_references` gathers them). `reference_figures` gives them all at once:

- `bleu`: corpus BLEU (sacrebleu defaults, 0..100) with each prompt's references as its set;
  `bleu_se`: its standard error over prompts (`BOOTSTRAP_DRAWS` seeded bootstrap resamples of the
  prompts: a few dozen prompts give a BLEU that moves by points);
- `rouge1`, `rouge2`, `rougeL`: F1 (rouge-score, stemmed), the best over a prompt's references,
  averaged over prompts (0..1); `rougeL` is ROUGE-L F;
- `mean_words`: the responses' mean length in words (`str.split`), beside
  `reference_mean_words`: the mean over prompts of each prompt's mean reference length (weighted
  as the responses are: one per prompt);
- `empty_share`: the share of responses that are empty (whitespace only);
- `slot_coverage` (only when every prompt is an E2E meaning representation such as
  ``name[The Eagle], eatType[coffee shop], familyFriendly[no]``): the share of responses that
  mention every slot value, with `slot_coverage_se` (binomial: sqrt(p (1 - p) / n));
  `slot_recall`: the share of all slots mentioned;
  `reference_slot_coverage`: the share of the references themselves that mention every slot,
  the human figure to read `slot_coverage` against (E2E's references leave slots out: about half
  of the dev set's mention every one under these rules).

When a slot counts as mentioned (`slot_mentioned`), case ignored:

- in general, its value's words from the start of a word on: a longer word counts
  ("moderately" for moderate, "highly" for high), a word that only contains the value does not
  ("pub" in "republic"); a space in the value matches spaces or hyphens ("city-centre").
  Paraphrases ("expensive" for priceRange[high], "five star" for 5 out of 5) do not count, so
  the figure is a lower bound on what a reader would accept;
- `familyFriendly[yes]` and `familyFriendly[no]`: a word starting with "family", "families",
  "child" or "kid" ("family-friendly", "children", "kids"; not "familiar"); the polarity ("not
  family-friendly") is not checked: a string rule cannot tell it reliably;
- `eatType`: the general rule, "coffee shop" also as "coffeeshop", "cafe" or "café".
"""
from __future__ import annotations

import math
import re
from collections.abc import Hashable, Iterable, Sequence
from typing import TypeVar

import numpy as np

from .text_metrics import corpus_bleu, rouge

BOOTSTRAP_DRAWS = 200  # resamples for bleu_se: its own error is about 5% of it (1 / sqrt(2 * 200))

K = TypeVar("K", bound=Hashable)

_SLOT = r"[A-Za-z][A-Za-z ]*\[[^\[\]]*\]"
# A whole E2E meaning representation: slots separated by commas (a trailing "=" allowed: the
# prompt format of dlms.eval.tasks.prepare_e2e task files).
_MR = re.compile(rf"\s*{_SLOT}(?:\s*,\s*{_SLOT})*\s*=?\s*")
_SLOT_PARTS = re.compile(r"([A-Za-z][A-Za-z ]*)\[([^\[\]]*)\]")
_FAMILY = re.compile(r"(?<!\w)(?:family|families|child|kid)", re.IGNORECASE)
_EAT_TYPE_SYNONYMS = {"coffee shop": ("coffee shop", "coffeeshop", "cafe", "café")}


def group_references(rows: Iterable[tuple[K, str]]) -> dict[K, list[str]]:
    """{key: [reference, ...]} of (key, reference) rows, keys in order of first appearance and each
    key's references in row order. A key is a prompt, or any hashable (e.g. (prompt, task))."""
    groups: dict[K, list[str]] = {}
    for key, reference in rows:
        groups.setdefault(key, []).append(reference)
    return groups


def word_count(text: str) -> int:
    """Words in `text`: its whitespace-separated pieces."""
    return len(text.split())


def parse_meaning_representation(text: str) -> list[tuple[str, str]] | None:
    """[(slot, value), ...] of an E2E meaning representation (``name[The Eagle], food[French]``),
    names and values stripped; None when `text` is not one (anything but comma-separated
    ``key[value]`` slots, optionally ending in "=")."""
    if not _MR.fullmatch(text):
        return None
    return [(key.strip(), value.strip()) for key, value in _SLOT_PARTS.findall(text)]


def _words_pattern(phrase: str) -> str:
    """A regex of `phrase` starting at a word start (case is the caller's flag); spaces match
    spaces or hyphens."""
    body = r"[\s-]+".join(re.escape(word) for word in phrase.split())
    return rf"(?<!\w){body}"


def slot_mentioned(slot: str, value: str, text: str) -> bool:
    """Whether `text` mentions the slot `slot[value]` (the rules of the module docstring). A slot
    with an empty value counts as mentioned: there is nothing to say."""
    key = slot.replace(" ", "").lower()
    value = value.strip()
    if not value:
        return True
    if key == "familyfriendly":
        return _FAMILY.search(text) is not None
    if key == "eattype":
        phrases = _EAT_TYPE_SYNONYMS.get(value.lower(), (value,))
        return any(re.search(_words_pattern(p), text, re.IGNORECASE) for p in phrases)
    return re.search(_words_pattern(value), text, re.IGNORECASE) is not None


def bootstrap_bleu_se(responses: Sequence[str], references: Sequence[Sequence[str]], draws: int = BOOTSTRAP_DRAWS,
                      seed: int = 0) -> float:
    """The standard error of corpus BLEU over prompts: the standard deviation of the BLEU of
    `draws` resamples (with replacement, seeded) of the (response, references) pairs; 0.0 for a
    single prompt, which has nothing to resample."""
    n = len(responses)
    if n < 2:
        return 0.0
    rng = np.random.default_rng(seed)
    scores = []
    for _ in range(draws):
        picks = rng.integers(0, n, n)
        scores.append(corpus_bleu([responses[i] for i in picks], [references[i] for i in picks]))
    return float(np.std(scores, ddof=1))


def slot_figures(prompts: Sequence[str], responses: Sequence[str]) -> dict[str, float] | None:
    """{"slot_coverage": share of responses that mention every slot of their prompt,
    "slot_recall": share of all slots mentioned} for E2E meaning-representation prompts; None when
    some prompt is not one (or none has a slot). ValueError when the two lists differ in length."""
    if len(prompts) != len(responses):
        raise ValueError(f"slot_figures: {len(prompts)} prompts but {len(responses)} responses")
    parsed = [parse_meaning_representation(p) for p in prompts]
    if not parsed or any(slots is None for slots in parsed) or not any(parsed):
        return None
    complete = mentioned = total = 0
    for slots, response in zip(parsed, responses):
        hits = [slot_mentioned(key, value, response) for key, value in slots]
        complete += all(hits)
        mentioned += sum(hits)
        total += len(hits)
    coverage = complete / len(responses)
    return {"slot_coverage": coverage, "slot_coverage_se": math.sqrt(coverage * (1 - coverage) / len(responses)),
            "slot_recall": mentioned / total if total else 1.0}


def reference_figures(prompts: Sequence[str], responses: Sequence[str],
                      references: Sequence[Sequence[str]]) -> dict[str, float | int]:
    """Every figure of the module docstring for one response per prompt.

    `prompts[i]` (str) was answered by `responses[i]` (str) and has the references
    `references[i]` (a non-empty list of str). Returns {"items", "references" (their total),
    "bleu", "bleu_se", "rouge1", "rouge2", "rougeL", "mean_words", "reference_mean_words", "empty_share"} and, for E2E
    meaning representations, "slot_coverage", "slot_coverage_se", "slot_recall" and "reference_slot_coverage" (over
    all references). ValueError when the lists differ
    in length, are empty, or a prompt has no reference.
    """
    if not len(prompts) == len(responses) == len(references):
        raise ValueError(f"reference_figures: {len(prompts)} prompts, {len(responses)} responses and "
                         f"{len(references)} reference lists; give one of each per prompt")
    scores = rouge(responses, references)  # checks: non-empty, one list per response, no empty list
    n = len(responses)
    figures: dict[str, float | int] = {
        "items": n,
        "references": sum(len(refs) for refs in references),
        "bleu": corpus_bleu(responses, references),
        "bleu_se": bootstrap_bleu_se(responses, references),
        **{key: float(scores[key]) for key in ("rouge1", "rouge2", "rougeL")},
        "mean_words": sum(word_count(r) for r in responses) / n,
        "reference_mean_words": sum(sum(word_count(r) for r in refs) / len(refs) for refs in references) / n,
        "empty_share": sum(not r.strip() for r in responses) / n,
    }
    slots = slot_figures(prompts, responses)
    if slots is not None:
        figures.update(slots)
        pooled = [(p, ref) for p, refs in zip(prompts, references) for ref in refs]
        figures["reference_slot_coverage"] = slot_figures(*zip(*pooled))["slot_coverage"]
    return figures
