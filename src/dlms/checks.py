"""Range checks for the values a user passes to the Python API (and through it, the command line).

Each raises an `ArgumentError` that names the argument (`num_samples must be at least 1, got -1`);
the command line shows the same message with the flag's name (`--num_samples`).
"""
from __future__ import annotations

import math
from numbers import Integral, Real

from .errors import ArgumentError, literal

# The shortest row a run may be built on: a start token, two of text and an end (config and data agree).
MIN_SEQ_LEN = 4


def _fail(name: str, allowed: str, value: object) -> ArgumentError:
    return ArgumentError("{arg} must be " + literal(allowed) + ", got " + literal(repr(value)), arg=name)


def check_int(name: str, value: object, minimum: int, *, optional: bool = True) -> None:
    """`value` is an integer >= `minimum` (or None when `optional`)."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise _fail(name, f"an integer of at least {minimum}", value)


def check_number(name: str, value: object, low: float | None = None, high: float | None = None, *,
                 low_open: bool = False, high_open: bool = False, optional: bool = True, note: str = "") -> None:
    """`value` is a finite number within [low, high] (open ends where asked), or None when `optional`."""
    if value is None and optional:
        return
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(float(value))
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if ok:
        return
    if low is not None and high is not None:
        allowed = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low is not None:
        allowed = f"{'above' if low_open else 'at least'} {low:g}"
    elif high is not None:
        allowed = f"{'below' if high_open else 'at most'} {high:g}"
    else:
        allowed = "a finite number"
    raise _fail(name, allowed + (f" ({note})" if note else ""), value)
