"""Reading JSON Lines: one object per non-blank line, each problem one `DataError` line."""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path


def read_objects(path: Path, *, name: str, fix: str) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of `path`. A line that is not JSON, or is
    JSON but not an object, is a DataError naming the file as `name` ("'data.jsonl'", "task
    file 'x.jsonl'") and ending with `fix`."""
    from ..errors import DataError

    with path.open("r", encoding="utf-8-sig") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{name} line {lineno} is not valid JSON ({exc.msg}); {fix}") from None
            if not isinstance(row, dict):
                raise DataError(f"{name} line {lineno} is a JSON {type(row).__name__}, not an object; {fix}")
            yield lineno, row
