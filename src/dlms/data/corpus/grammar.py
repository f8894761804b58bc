"""The probabilistic grammar of the built-in corpus and its seeded generator.

The grammar is an acyclic context-free grammar whose nonterminals carry the
features sentiment ``s``, topic ``t``, number ``n`` (sg/pl) and tense; the
features are expanded into plain nonterminal names such as
``"<S1 positive food>"``.  Symbols are strings:

* ``"<...>"``   a nonterminal, expanded by :data:`RULES`;
* ``ARTICLE``   the indefinite article: ``"an"`` if the *next* word starts
  with a vowel letter, else ``"a"`` (a one-word lookahead, equivalent to
  splitting every category into vowel/consonant-initial halves);
* anything else a terminal word.

Text convention: lowercase words separated by single spaces, every sentence
ending in a separate ``"."`` token, e.g.
``"the chef cooked a juicy steak perfectly . i will definitely come back ."``

A text is 1 or 2 sentences, all with the same sentiment and topic
(``<TEXT s t>``); a second sentence may also be a topic-free comment that
carries the sentiment only.
"""

from __future__ import annotations

import json
import re
import random
from bisect import bisect
from collections.abc import Iterator
from functools import lru_cache
from itertools import accumulate
from pathlib import Path

from . import lexicon as L

ARTICLE = "<a/an>"
NUMBERS = ("sg", "pl")
TENSES = ("past", "pres")

Rule = tuple[float, tuple[str, ...]]
_SYMBOL = re.compile(r"<[^<>]*>|[^\s<>]+")


def article_for(word: str) -> str:
    """The indefinite article before ``word`` (orthographic rule, see lexicon)."""
    return "an" if word[:1] in "aeiou" else "a"


def text_symbol(sentiment: str, topic: str) -> str:
    """Start symbol of the texts with the given labels."""
    return f"<TEXT {sentiment} {topic}>"


def _build() -> dict[str, list[Rule]]:
    L.check_lexicon()
    rules: dict[str, list[Rule]] = {}

    def add(lhs: str, rhs: str | tuple[str, ...], w: float = 1.0) -> None:
        # names contain spaces ("<S1 positive food>"), so split on symbols, not blanks
        rhs = tuple(_SYMBOL.findall(rhs)) if isinstance(rhs, str) else rhs
        rules.setdefault(lhs, []).append((w, rhs))

    def lex(lhs: str, words: list[str]) -> None:
        for word in words:
            add(lhs, (word,))

    def opt(lhs: str, sym: str, p: float) -> None:
        add(lhs, (), 1.0 - p)
        add(lhs, (sym,), p)

    # --- neutral categories -------------------------------------------------
    lex("<MOD>", L.MODIFIERS)
    opt("<MOD?>", "<MOD>", 0.35)
    lex("<INT>", L.INTENSIFIERS)
    opt("<INT?>", "<INT>", 0.4)
    lex("<FAM sg>", L.FAMILY)
    lex("<FAM pl>", [L.plural(w) for w in L.FAMILY])
    # subjects by verb form they take in the present: base ("i love") or s3
    lex("<SUBJ base>", L.PRONOUNS_BASE)
    add("<SUBJ base>", "my <FAM pl>", 3.0)
    lex("<SUBJ s3>", L.PRONOUNS_S3)
    add("<SUBJ s3>", "everyone")
    add("<SUBJ s3>", "my <FAM sg>", 4.0)
    add("<SUBJ any>", "<SUBJ base>")
    add("<SUBJ any>", "<SUBJ s3>")
    add("<WE>", "i", 2.0)
    add("<WE>", "we")
    add("<AUD>", "anyone")
    add("<AUD>", "everyone")
    add("<AUD>", "my <FAM pl>")
    lex("<TIME>", L.TIME_SINGLE)
    lex("<LAST>", L.TIME_AFTER_LAST)
    lex("<THIS>", L.TIME_AFTER_THIS)
    add("<TIME>", "last <LAST>", 3.0)
    add("<TIME>", "this <THIS>")
    for n, pro in (("sg", "it"), ("pl", "they")):
        add(f"<PRO {n}>", pro)
    for (n, tense), cop in {("sg", "past"): "was", ("sg", "pres"): "is", ("pl", "past"): "were", ("pl", "pres"): "are"}.items():
        add(f"<COP {n} {tense}>", cop)
    add("<RETURN>", "come back")
    add("<RETURN>", "go back")
    add("<RETURN>", "return")
    add("<IT>", "it", 2.0)
    add("<IT>", "every minute of it")

    # --- sentiment categories -----------------------------------------------
    for s in L.SENTIMENTS:
        lex(f"<ADJG {s}>", L.GENERAL_ADJ[s])
        lex(f"<ADJPER {s}>", L.PERSON_ADJ[s])
        add(f"<ADJP {s}>", f"<ADJG {s}>")
        add(f"<ADJP {s}>", f"<ADJPER {s}>", 2.0)
        opt(f"<ADJP? {s}>", f"<ADJP {s}>", 0.4)
        lex(f"<ADV {s}>", L.MANNER_ADV[s])
        lex(f"<STANCE {s}>", L.STANCE_ADV[s])
        for i, form in enumerate(("base", "s3", "past")):
            lex(f"<LIKE {s} {form}>", [v[i] for v in L.LIKE_VERBS[s]])

    # --- topic categories ---------------------------------------------------
    for t in L.TOPICS:
        lex(f"<THING {t} sg>", L.THINGS[t])
        lex(f"<THING {t} pl>", [L.plural(w) for w in L.THINGS[t]])
        lex(f"<AGENT {t} sg>", L.AGENTS[t])
        lex(f"<AGENT {t} pl>", [L.plural(w) for w in L.AGENTS[t]])
        lex(f"<PLACE {t}>", L.PLACES[t])
        lex(f"<EXP {t}>", L.EXPERIENCE_VERBS[t])
        for i, form in enumerate(("base", "s3", "past")):
            lex(f"<ACT {t} {form}>", [v[i] for v in L.ACTION_VERBS[t]])
        for n in NUMBERS:
            add(f"<THE_NP {t} {n}>", f"the <MOD?> <THING {t} {n}>")
            add(f"<OBJ {t}>", f"the <MOD?> <THING {t} {n}>")
        add(f"<OBJ {t}>", (ARTICLE, "<MOD?>", f"<THING {t} sg>"), 2.0)
        opt(f"<AT_PLACE? {t}>", f"<AT_PLACE {t}>", 0.4)
        add(f"<AT_PLACE {t}>", f"at the <PLACE {t}>")
        for s in L.SENTIMENTS:
            lex(f"<ADJTOP {s} {t}>", L.TOPIC_ADJ[t][s])
            # thing adjectives: half general, half specific to the domain
            add(f"<ADJT {s} {t}>", f"<ADJG {s}>")
            add(f"<ADJT {s} {t}>", f"<ADJTOP {s} {t}>")

    # --- sentences ----------------------------------------------------------
    for s in L.SENTIMENTS:
        # comments: carry the sentiment only; allowed as a second sentence
        add(f"<COMMENT {s}>", f"it was <INT?> <ADJG {s}> .")
        add(f"<COMMENT {s}>", f"<SUBJ any> <LIKE {s} past> <IT> .")
        add(f"<COMMENT {s}>", f"<WE> will <STANCE {s}> <RETURN> .")
        for t in L.TOPICS:
            S = f"<S {s} {t}>"
            for k in range(1, 7):
                add(S, f"<S{k} {s} {t}>")
            for n in NUMBERS:
                for tense in TENSES:
                    cop = f"<COP {n} {tense}>"
                    # S1: "the pizza was really delicious ."
                    add(f"<S1 {s} {t}>", f"<THE_NP {t} {n}> {cop} <INT?> <ADJT {s} {t}> .")
                    # S2: "my friends loved the pizzas because they were crispy ."
                    for p in ("base", "s3"):
                        form = p if tense == "pres" else "past"
                        head = f"<SUBJ {p}> <LIKE {s} {form}> <THE_NP {t} {n}>"
                        add(f"<S2 {s} {t}>", f"{head} <AT_PLACE {t}> .")
                        add(f"<S2 {s} {t}>", f"{head} because <PRO {n}> {cop} <INT?> <ADJT {s} {t}> .")
                    # S3: "the friendly chef cooks a pizza perfectly ."
                    form = "past" if tense == "past" else ("s3" if n == "sg" else "base")
                    add(f"<S3 {s} {t}>", f"the <ADJP? {s}> <AGENT {t} {n}> <ACT {t} {form}> <OBJ {t}> <ADV {s}> .")
                    # S6: "the waiters at the diner were very rude ."
                    add(f"<S6 {s} {t}>", f"the <AGENT {t} {n}> at the <PLACE {t}> {cop} <INT?> <ADJP {s}> .")
            # S4: "i would never recommend the diner to anyone ."
            add(f"<S4 {s} {t}>", f"<WE> would <STANCE {s}> recommend the <MOD?> <PLACE {t}> to <AUD> .")
            # S5: "yesterday we ordered a bland soup at the diner ."
            add(f"<S5 {s} {t}>", f"<TIME> <SUBJ any> <EXP {t}> {ARTICLE} <ADJT {s} {t}> <THING {t} sg> <AT_PLACE? {t}> .")
            T = text_symbol(s, t)
            add(T, (S,), 0.45)
            add(T, (S, S), 0.30)
            add(T, (S, f"<COMMENT {s}>"), 0.25)
    return rules


#: the grammar: nonterminal -> list of (weight, right-hand side)
RULES: dict[str, list[Rule]] = _build()

# cumulative weights per nonterminal, for sampling with one rng.random() call
_CUM = {lhs: (list(accumulate(w for w, _ in rs)), [r for _, r in rs]) for lhs, rs in RULES.items()}


def _expand(symbol: str, rng: random.Random, out: list[str]) -> None:
    if symbol == ARTICLE or not symbol.startswith("<"):
        out.append(symbol)
        return
    cum, rhss = _CUM[symbol]
    # bisect on random() (not rng.choices) keeps the stream explicit and stable
    rhs = rhss[min(bisect(cum, rng.random() * cum[-1]), len(rhss) - 1)]
    for sym in rhs:
        _expand(sym, rng, out)


def generate_text(sentiment: str, topic: str, rng: random.Random) -> str:
    """One text with the given labels, drawn from the grammar with ``rng``."""
    toks: list[str] = []
    _expand(text_symbol(sentiment, topic), rng, toks)
    for i, tok in enumerate(toks):
        if tok == ARTICLE:
            toks[i] = article_for(toks[i + 1])
    return " ".join(toks)


def iter_examples(n: int, seed: int = 0) -> Iterator[dict]:
    """Yield ``n`` examples ``{"text", "sentiment", "topic"}``, deterministic by ``seed``.

    Labels are drawn uniformly (sentiment, then topic), then the text from the
    grammar; everything comes from one ``random.Random(seed)`` stream.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(seed)
    for _ in range(n):
        s = L.SENTIMENTS[int(rng.random() * len(L.SENTIMENTS))]
        t = L.TOPICS[int(rng.random() * len(L.TOPICS))]
        yield {"text": generate_text(s, t, rng), "sentiment": s, "topic": t}


def generate_examples(n: int, seed: int = 0) -> list[dict]:
    """``n`` examples as a list; see :func:`iter_examples`."""
    return list(iter_examples(n, seed))


def write_corpus(path: str | Path, n: int, seed: int = 0) -> Path:
    """Write ``n`` examples as JSON lines (keys text, sentiment, topic); return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for ex in iter_examples(n, seed):
            f.write(json.dumps(ex, sort_keys=True) + "\n")
    return path


# --- properties computed from the grammar -----------------------------------


@lru_cache(maxsize=None)
def _words(symbol: str) -> frozenset[str]:
    """Terminal words reachable from ``symbol`` ("a"/"an" for the article)."""
    if symbol == ARTICLE:
        return frozenset(("a", "an"))
    if not symbol.startswith("<"):
        return frozenset((symbol,))
    return frozenset().union(*(_words(x) for _, rhs in RULES[symbol] for x in rhs))


def vocabulary() -> set[str]:
    """All words of the language (including "." and the articles)."""
    return set().union(*(_words(text_symbol(s, t)) for s in L.SENTIMENTS for t in L.TOPICS))


def sentiment_neutral_words() -> set[str]:
    """Words that texts of every sentiment use: a prefix made only of these leaves the
    sentiment of its continuation open (used to pick prompts for steering)."""
    per_sentiment = [set().union(*(_words(text_symbol(s, t)) for t in L.TOPICS)) for s in L.SENTIMENTS]
    return set.intersection(*per_sentiment)


def _always_contains(symbol: str, words: frozenset[str]) -> bool:
    """True iff every string derived from ``symbol`` contains a word of ``words``."""
    if symbol == ARTICLE or not symbol.startswith("<"):
        return bool(_words(symbol) & words) and _words(symbol) <= words
    return all(any(_always_contains(x, words) for x in rhs) for _, rhs in RULES[symbol])


def label_words() -> dict[tuple[str, str], frozenset[str]]:
    """Words that mark a label: ``{("sentiment", s): ..., ("topic", t): ...}``."""
    out: dict[tuple[str, str], frozenset[str]] = {}
    for s in L.SENTIMENTS:
        ws = set(L.GENERAL_ADJ[s] + L.PERSON_ADJ[s] + L.MANNER_ADV[s] + L.STANCE_ADV[s])
        ws |= {f for v in L.LIKE_VERBS[s] for f in v} | {w for t in L.TOPICS for w in L.TOPIC_ADJ[t][s]}
        out[("sentiment", s)] = frozenset(ws)
    for t in L.TOPICS:
        ws = set(L.PLACES[t] + L.EXPERIENCE_VERBS[t] + L.TOPIC_ADJ[t]["positive"] + L.TOPIC_ADJ[t]["negative"])
        ws |= {f for w in L.THINGS[t] + L.AGENTS[t] for f in (w, L.plural(w))}
        ws |= {f for v in L.ACTION_VERBS[t] for f in v}
        out[("topic", t)] = frozenset(ws)
    return out


def labels_are_determined() -> bool:
    """Check, on the grammar, that a text's words determine its labels.

    For every start symbol ``<TEXT s t>``: every derivable string contains a
    word marking ``s`` and one marking ``t``, and no word marking another
    sentiment or topic is reachable.  Hence the languages of different
    (s, t) are disjoint and a grammatical text has exactly one label pair.
    """
    lw = label_words()
    for s in L.SENTIMENTS:
        for t in L.TOPICS:
            sym = text_symbol(s, t)
            reach = _words(sym)
            for (attr, lab), ws in lw.items():
                mine = lab == (s if attr == "sentiment" else t)
                if mine and not _always_contains(sym, ws):
                    return False
                if not mine and reach & ws:
                    return False
    return True


@lru_cache(maxsize=None)
def _count_by_length(symbol: str) -> dict[int, int]:
    """Lower bound on the number of distinct strings of each length derivable from ``symbol``.

    For one rule and one choice of lengths for its symbols, concatenation is
    injective (the cut points are fixed), so the product of the parts' bounds
    counts distinct strings.  Different rules or length splits may overlap,
    so they are combined with max, not sum, except for symbols deriving only
    one-word strings, whose count is exactly their number of words.  The
    article counts as one string (it is fixed by the next word).
    """
    if symbol == ARTICLE or not symbol.startswith("<"):
        return {1: 1}
    best: dict[int, int] = {}
    lengths: set[int] = set()
    for _, rhs in RULES[symbol]:
        acc = {0: 1}
        for x in rhs:
            nxt: dict[int, int] = {}
            for l1, c1 in acc.items():
                for l2, c2 in _count_by_length(x).items():
                    nxt[l1 + l2] = max(nxt.get(l1 + l2, 0), c1 * c2)
            acc = nxt
        lengths |= acc.keys()
        for k, c in acc.items():
            best[k] = max(best.get(k, 0), c)
    if lengths == {1} and not {"a", "an"} & _words(symbol):
        # only one-word strings: the language is exactly the reachable words
        return {1: len(_words(symbol))}
    return best


def sentence_count_lower_bound() -> int:
    """A provable lower bound on the number of distinct texts in the language.

    Strings of different lengths are distinct, so the per-length bounds are
    summed; the start symbols of different labels are summed only when
    :func:`labels_are_determined` proves their languages disjoint (else max).
    """
    per_label = [sum(_count_by_length(text_symbol(s, t)).values()) for s in L.SENTIMENTS for t in L.TOPICS]
    return sum(per_label) if labels_are_determined() else max(per_label)
