"""Exact recognizer of the corpus grammar, with label read-out.

``check_text`` decides membership in the language of :mod:`.grammar` with a
memoised chart parser: for every (nonterminal, start position) it computes
the set of positions where a derivation of that nonterminal can end.  The
grammar is acyclic, so this terminates and is exact (it explores every
derivation, including ambiguous ones); it is not a bag-of-words heuristic.

Labels: the language is the union of ``<TEXT s t>`` over sentiments ``s``
and topics ``t``, and every sentence of a text is derived with the same
``s`` and ``t``.  A text whose sentences each parse but with different
sentiments or topics (e.g. a positive food sentence followed by a negative
food sentence) is therefore *not* in the language: ``grammatical=False``.
The grammar guarantees (see ``grammar.labels_are_determined``) that a
grammatical text parses under exactly one (s, t), which are the labels it
expresses.

Normalisation: leading/trailing whitespace is stripped and runs of
whitespace collapse to one space; nothing else (case and the separate "."
token are part of the language).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from . import lexicon as L
from .grammar import ARTICLE, RULES, _words, article_for, text_symbol, vocabulary

ATTRIBUTES = ("sentiment", "topic", "review")  # review: "sentiment-topic"


@dataclass(frozen=True)
class CheckResult:
    """Verdict on one text; labels are None unless the text is grammatical."""

    grammatical: bool
    sentiment: str | None = None
    topic: str | None = None


# Preterminals (all rules are one word) are matched by set lookup, not rule by rule.
_LEXICAL: dict[str, frozenset[str]] = {
    lhs: frozenset(r[0] for _, r in rs)
    for lhs, rs in RULES.items()
    if all(len(r) == 1 and not r[0].startswith("<") for _, r in rs)
}
# Right-hand sides without weights, for parsing.
_RHS: dict[str, tuple[tuple[str, ...], ...]] = {lhs: tuple(r for _, r in rs) for lhs, rs in RULES.items()}
_VOCAB = frozenset(vocabulary())
# Words reachable from each start symbol: a text using any other word cannot
# belong to that (sentiment, topic), so its parse is skipped (sound pruning).
_STARTS = [(s, t, text_symbol(s, t), _words(text_symbol(s, t))) for s in L.SENTIMENTS for t in L.TOPICS]


class _Chart:
    """Memoised end positions of every (symbol, start) over one token list."""

    def __init__(self, toks: Sequence[str]):
        self.toks = toks
        self.memo: dict[tuple[str, int], frozenset[int]] = {}

    def ends(self, sym: str, i: int) -> frozenset[int]:
        key = (sym, i)
        got = self.memo.get(key)
        if got is not None:
            return got
        toks, n = self.toks, len(self.toks)
        if sym == ARTICLE:
            # "a"/"an" must agree with the following word
            ok = i + 1 < n and toks[i] == article_for(toks[i + 1])
            res = frozenset((i + 1,)) if ok else frozenset()
        elif not sym.startswith("<"):
            res = frozenset((i + 1,)) if i < n and toks[i] == sym else frozenset()
        elif sym in _LEXICAL:
            res = frozenset((i + 1,)) if i < n and toks[i] in _LEXICAL[sym] else frozenset()
        else:
            out: set[int] = set()
            for rhs in _RHS[sym]:
                pos = {i}
                for x in rhs:
                    pos = {e for p in pos for e in self.ends(x, p)}
                    if not pos:
                        break
                out |= pos
            res = frozenset(out)
        self.memo[key] = res
        return res


def _normalise(text: str) -> list[str]:
    return text.split()  # str.split() strips and collapses all whitespace runs


def parses(text: str) -> list[tuple[str, str]]:
    """All (sentiment, topic) under which ``text`` is derivable (normally 0 or 1)."""
    toks = _normalise(text)
    if not toks or not _VOCAB.issuperset(toks):
        return []
    chart = _Chart(toks)
    found = []
    for s, t, sym, words in _STARTS:
        if words.issuperset(toks) and len(toks) in chart.ends(sym, 0):
            found.append((s, t))
    return found


def check_text(text: str) -> CheckResult:
    """Is ``text`` in the language, and which sentiment and topic does it express?"""
    found = parses(text)
    if not found:
        return CheckResult(False)
    # unique by construction; if it ever were not, report only what all parses agree on
    sents = {s for s, _ in found}
    topics = {t for _, t in found}
    return CheckResult(
        True,
        sents.pop() if len(sents) == 1 else None,
        topics.pop() if len(topics) == 1 else None,
    )


def check_texts(texts: Sequence[str]) -> dict:
    """Summary ``{"grammatical": fraction in [0, 1], "n": len(texts)}`` (fraction 0.0 when empty)."""
    n = len(texts)
    ok = sum(check_text(x).grammatical for x in texts)
    return {"grammatical": ok / n if n else 0.0, "n": n}


def label_accuracy(texts: Sequence[str], labels: Sequence[str], attribute: str) -> float:
    """Fraction of texts that are grammatical AND express ``labels[i]`` for ``attribute``.

    ``attribute`` is "sentiment", "topic" or "review" (both, as "positive-food").  Returns 0.0
    for no texts.
    """
    if attribute not in ATTRIBUTES:
        raise ValueError(f"attribute must be one of {ATTRIBUTES}, got {attribute!r}")
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
    if not texts:
        return 0.0
    hits = 0
    for text, lab in zip(texts, labels):
        r = check_text(text)
        expressed = f"{r.sentiment}-{r.topic}" if attribute == "review" else getattr(r, attribute)
        hits += r.grammatical and expressed == lab
    return hits / len(texts)
