"""JSON that is always valid JSON: NaN and infinities become null (Python's `json` would
write the bare words NaN and Infinity, which no other JSON reader accepts)."""
from __future__ import annotations

import json
import math
from typing import Any


def finite(value: Any) -> Any:
    """`value` with every non-finite float inside it (dicts, lists, tuples) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """`json.dumps` of `value` with non-finite floats as null; never writes NaN or Infinity."""
    return json.dumps(finite(value), allow_nan=False, **kwargs)
