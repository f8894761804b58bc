"""Prefix / continuation pairs for DGLM: each text is cut at a random word boundary."""
from __future__ import annotations

import random


def cut_pairs(texts: list[str], seed: int = 0, min_words: int = 1) -> list[tuple[str, str]]:
    """(prefix, continuation) per text, cut after a uniformly chosen word so that both sides
    keep at least `min_words` words; texts too short for that are skipped. The same seed gives
    the same cuts."""
    return [(prefix, continuation) for _, prefix, continuation in cut_pairs_indexed(texts, seed, min_words)]


def cut_pairs_indexed(texts: list[str], seed: int = 0, min_words: int = 1) -> list[tuple[int, str, str]]:
    """`cut_pairs` with the index of each pair's text: (index, prefix, continuation)."""
    rng = random.Random(seed)
    pairs = []
    for i, text in enumerate(texts):
        words = text.split()
        if len(words) < 2 * min_words:
            continue
        cut = rng.randint(min_words, len(words) - min_words)
        pairs.append((i, " ".join(words[:cut]), " ".join(words[cut:])))
    return pairs
