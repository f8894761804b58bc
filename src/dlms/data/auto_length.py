"""`seq_len=None`: a row length fitted to the data.

The builder measures what the first `SAMPLE` training examples take in a row (bos + tokens +
eos for the padded layout, tokens + eos for packed) and `choose` picks the length that holds
`PERCENTILE`% of them, rounded up to a multiple of `MULTIPLE`, within [`MINIMUM`, `CAP`]. The
returned record is stored as the dataset's `meta["seq_len_auto"]`; `describe` turns it into one
line for the user.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

PERCENTILE = 99
MULTIPLE = 8  # fine enough that padded rows waste little, coarse enough to keep shapes few
MINIMUM = 16
CAP = 512
SAMPLE = 20000  # training examples measured: the first ones, in file order (deterministic)


def cache_key_part() -> dict[str, Any]:
    """The cache key's seq_len part for seq_len=None: the rule, so a changed rule is a new entry
    (and the entry, found without measuring again, holds the arrays of the length it gave)."""
    return {"auto": {"percentile": PERCENTILE, "multiple": MULTIPLE, "min": MINIMUM, "max": CAP, "sample": SAMPLE}}


def choose(lengths: Sequence[int]) -> dict[str, Any]:
    """The record of the choice for these measured row lengths (at least one).

    "truncated_examples" counts the measured examples longer than the chosen length (padded:
    cut, losing their eos; packed: continued in the next row).
    """
    measured = np.asarray(lengths)
    # "higher": an observed length that at least PERCENTILE% of the examples fit in.
    p_tokens = int(np.percentile(measured, PERCENTILE, method="higher"))
    chosen = min(CAP, max(MINIMUM, math.ceil(p_tokens / MULTIPLE) * MULTIPLE))
    return {
        "percentile": PERCENTILE,
        "p99_tokens": p_tokens,
        "multiple": MULTIPLE,
        "min": MINIMUM,
        "cap": CAP,
        "chosen": chosen,
        "measured_examples": int(measured.size),
        "truncated_examples": int((measured > chosen).sum()),
    }


def describe(record: dict[str, Any], layout: str) -> str:
    """One line: the chosen length, why, and what happens to the longer examples."""
    capped = record["p99_tokens"] > record["cap"]
    rule = f"capped at {record['cap']}" if capped else f"rounded up to a multiple of {record['multiple']}"
    note = (f"seq_len {record['chosen']} fitted to the data: {record['percentile']}% of the "
            f"{record['measured_examples']:,} training examples measured take at most {record['p99_tokens']} "
            f"tokens with their special tokens ({rule})")
    if record["truncated_examples"]:
        fate = "are cut" if layout == "padded" else "continue into the next row"
        note += f"; {record['truncated_examples']:,} longer example(s) {fate}"
    return note
