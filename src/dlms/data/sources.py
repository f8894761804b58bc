"""Reading raw examples from disk, the built-in corpus or the Hugging Face Hub.

`read_examples(path, ...)` yields `{"text": str, "labels": {column: str | None}}` one at a time;
files are streamed, never read whole. A label value that is missing or empty in one row is
`None` (the builder stores it as -1); a label *column* that does not exist is an error.
With `prompt_column` set it reads prompt/response rows instead (see prompt_response.py):
`{"prompt": str, "response": str, "task": str | None, "labels": {...}}`, the task from
`task_column` (None when there is none, or the row's value is missing or empty). With
`messages_column` set the prompt and response come from a list of chat messages (see chat.py):
the prompt is a `Conversation` (the turns before the last one), the response the last turn's
content; a row that does not end with an assistant turn is skipped and counted in `skipped`.

Accepted `path` values:

- `"builtin"` / `"builtin:N"`: the built-in synthetic corpus (labels `sentiment`, `topic`, and
  `review`, the pair as one label);
- `"hf:owner/name"`: a Hub dataset via `datasets.load_dataset` (split "train", streamed);
- a `.txt` file. Rule: if a blank (whitespace-only) line occurs *between* two non-blank lines,
  the file is a list of documents separated by blank lines (each paragraph, its lines joined by
  "\\n", is one example); otherwise every non-blank line is one example. Leading and trailing
  blank lines never switch modes. Deciding takes one streamed scan that stops at the first such
  blank line;
- a `.jsonl` file (one JSON object per line), a `.csv` or `.tsv` file with a header row;
- a folder saved by `datasets` `save_to_disk` (a `DatasetDict` uses its "train" split);
- any other folder: every .txt/.jsonl/.csv/.tsv file under it, recursively, in sorted order
  (hidden files and other extensions are skipped).

Every error is a one-line `DataError` that names the path and the fix.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from dlms.data.chat import split_conversation
from dlms.data.jsonl import read_objects
from dlms.errors import ConfigError, DataError

TEXT_EXTENSIONS = (".txt", ".jsonl", ".csv", ".tsv")
SNIFF_BYTES = 64 * 1024  # how much of each file is checked for binary content
_FIX = "pass a .txt/.jsonl/.csv/.tsv file, a folder of them, a save_to_disk folder, 'builtin' or 'hf:owner/name'"

Example = dict[str, Any]  # {"text": str, "labels": {column: str | None}} (or prompt, response, task)
Fields = dict[str, str]  # what an example holds -> the column it comes from, e.g. {"text": "text"}


# --------------------------------------------------------------------------------------------
# Classifying a path


def parse_builtin(path: str, builtin_examples: int) -> int | None:
    """Number of built-in examples for "builtin" / "builtin:N", or None if `path` is not builtin."""
    if path == "builtin":
        return builtin_examples
    if path.startswith("builtin:"):
        count = path.split(":", 1)[1]
        if not count.isdigit() or int(count) < 1:
            raise DataError(f"bad data source '{path}'; use 'builtin' or 'builtin:N' with N a positive integer")
        return int(count)
    return None


def is_hf_saved_dataset(folder: Path) -> bool:
    """True for folders written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk`."""
    if (folder / "dataset_dict.json").is_file():
        return True
    return (folder / "state.json").is_file() and (folder / "dataset_info.json").is_file()


def _data_files(folder: Path) -> list[Path]:
    """Readable data files under `folder`, recursive, sorted by relative path; hidden ones skipped."""
    files = []
    for item in folder.rglob("*"):
        rel = item.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if item.is_file() and item.suffix.lower() in TEXT_EXTENSIONS:
            files.append(item)
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


def _check_exists(path: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"data path '{path}' does not exist; {_FIX}")
    return p


def check_text_file(path: Path) -> None:
    """Raise DataError if `path` is empty, binary, or has an unsupported extension."""
    if path.suffix.lower() not in TEXT_EXTENSIONS:
        raise DataError(f"data file '{path}' has an unsupported extension '{path.suffix}'; {_FIX}")
    with path.open("rb") as fh:
        head = fh.read(SNIFF_BYTES)
    if not head:
        raise DataError(f"data file '{path}' is empty; add examples to it or pass another file")
    try:
        # Incremental decoding tolerates a multi-byte character cut at the 64 KiB boundary.
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
        binary = b"\x00" in head
    except UnicodeDecodeError:
        binary = True
    if binary:
        raise DataError(
            f"data file '{path}' is not UTF-8 text (found binary bytes); pass a .txt/.jsonl/.csv/.tsv file"
        )


# --------------------------------------------------------------------------------------------
# Per-format readers. Each yields examples; columns are validated on the header / first record.


# The API argument first, then the run-config key that sets it.
_SETTINGS = {"text": "text_column (data.text_column)", "label": "label_columns (data.label_column)",
             "prompt": "prompt_column (data.prompt_column)", "response": "response_column (data.response_column)",
             "task": "task_column (data.task_column)", "messages": "messages_column (data.messages_column)"}
NO_ASSISTANT = "no_assistant_turn"  # the `skipped` count of chat rows that do not end with an assistant turn


def _missing_column(kind: str, column: str, path: Any, available: Sequence[str]) -> DataError:
    return DataError(
        f"{kind} column '{column}' not found in '{path}'; available columns: "
        f"{', '.join(map(str, available)) or '(none)'}; set {_SETTINGS[kind]} to one of them"
    )


def _check_columns(fields: Fields, label_columns: Sequence[str], path: Any, available: Sequence[str]) -> None:
    """DataError for the first column of `fields` or `label_columns` not in `available`."""
    for kind, cols in [*((k, [c]) for k, c in fields.items()), ("label", label_columns)]:
        for col in cols:
            if col not in available:
                raise _missing_column(kind, col, path, available)


def text_fields(text_column: str = "text", prompt_column: str | None = None, response_column: str = "response",
                task_column: str | None = None, messages_column: str | None = None) -> Fields:
    """The columns an example is read from: the text, or (prompt_column set) prompt, response and
    task, or (messages_column set) the messages and task."""
    if prompt_column is not None and messages_column is not None:
        raise ConfigError(f"prompt_column '{prompt_column}' and messages_column '{messages_column}' both say where "
                          "the prompts come from; keep one (data.prompt_column/response_column, or "
                          "data.messages_column)")
    if messages_column is not None:
        fields = {"messages": messages_column}
    elif prompt_column is None:
        return {"text": text_column}
    else:
        fields = {"prompt": prompt_column, "response": response_column}
    if task_column is not None:
        fields["task"] = task_column
    return fields


def _label_value(value: Any) -> str | None:
    if value is None:
        return None
    value = str(value)
    return value if value.strip() else None


def _txt_is_paragraphs(path: Path) -> bool:
    """True if a blank line separates two non-blank lines (see the module docstring)."""
    seen_text = blank_after_text = False
    with path.open("r", encoding="utf-8-sig", errors="replace") as fh:
        for line in fh:
            if line.strip():
                if blank_after_text:
                    return True
                seen_text = True
            elif seen_text:
                blank_after_text = True
    return False


def _read_txt(path: Path, fields: Fields, label_columns: Sequence[str]) -> Iterator[Example]:
    if "prompt" in fields or "messages" in fields:
        kind = "prompt" if "prompt" in fields else "messages"
        raise DataError(f"'{path}' is a .txt file: it has no columns, so no {kind} column '{fields[kind]}'; "
                        "prompt/response data needs a .jsonl, .csv or .tsv file with a prompt and a response "
                        "column, or a messages column (or set data.format=text)")
    if label_columns:
        raise _missing_column("label", label_columns[0], path, [])
    paragraphs = _txt_is_paragraphs(path)
    with path.open("r", encoding="utf-8-sig") as fh:
        if not paragraphs:
            for line in fh:
                line = line.rstrip("\r\n")
                if line.strip():
                    yield {"text": line, "labels": {}}
            return
        block: list[str] = []
        for line in fh:
            line = line.rstrip("\r\n")
            if line.strip():
                block.append(line)
            elif block:
                yield {"text": "\n".join(block), "labels": {}}
                block = []
        if block:
            yield {"text": "\n".join(block), "labels": {}}


def _row_example(row: dict, fields: Fields, label_columns: Sequence[str], where: str) -> Example | None:
    """The example of one row; None for a chat row that does not end with an assistant turn."""
    example: Example = {}
    for kind, column in fields.items():
        value = row.get(column)
        if kind == "task":  # optional per row, like a label
            example[kind] = _label_value(value)
            continue
        if kind == "messages":
            split = split_conversation(value, where, column)
            if split is None:
                return None
            example["prompt"], example["response"] = split
            continue
        if not isinstance(value, str):
            got = "missing" if value is None else f"a {type(value).__name__}"
            raise DataError(f"{where}: {kind} column '{column}' is {got}; every row needs a {kind} string")
        example[kind] = value
    example["labels"] = {col: _label_value(row.get(col)) for col in label_columns}
    return example


def _read_jsonl(path: Path, fields: Fields, label_columns: Sequence[str]) -> Iterator[Example]:
    checked = False
    for lineno, row in read_objects(path, name=f"'{path}'", fix="write one JSON object per line"):
        if not checked:  # the first record defines the columns
            _check_columns(fields, label_columns, path, list(row))
            checked = True
        yield _row_example(row, fields, label_columns, f"'{path}' line {lineno}")


def _read_delimited(path: Path, fields: Fields, label_columns: Sequence[str]) -> Iterator[Example]:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    # Long documents in one cell are normal here; the default 128 KiB field limit is not.
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    with path.open("r", encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh, delimiter=delimiter)
        header = reader.fieldnames or []
        _check_columns(fields, label_columns, path, header)
        for row in reader:
            yield _row_example(row, fields, label_columns, f"'{path}' line {reader.line_num}")


def _read_file(path: Path, fields: Fields, label_columns: Sequence[str]) -> Iterator[Example]:
    check_text_file(path)
    suffix = path.suffix.lower()
    if suffix == ".txt":
        rows = _read_txt(path, fields, label_columns)
    elif suffix == ".jsonl":
        rows = _read_jsonl(path, fields, label_columns)
    else:
        rows = _read_delimited(path, fields, label_columns)
    return _utf8_guard(rows, path)


def _utf8_guard(rows: Iterator[Example], path: Path) -> Iterator[Example]:
    """Turn a decoding failure past the sniffed first 64 KiB into the same one-line DataError."""
    try:
        yield from rows
    except UnicodeDecodeError:
        raise DataError(
            f"data file '{path}' is not UTF-8 text (found binary bytes after the first 64 KiB); "
            "pass a .txt/.jsonl/.csv/.tsv file"
        ) from None


def _read_hf_dataset(ds: Any, where: str, fields: Fields, label_columns: Sequence[str]) -> Iterator[Example]:
    """Rows of a `datasets.Dataset` / `IterableDataset`, read in batches (row access is slow)."""
    columns = list(ds.column_names or [])
    if columns:  # streamed Hub datasets may not know their columns up front
        _check_columns(fields, label_columns, where, columns)
    wanted = [*fields.values(), *label_columns]
    for batch in ds.iter(batch_size=1024):
        _check_columns(fields, label_columns, where, list(batch))
        for i in range(len(batch[wanted[0]])):
            row = {col: batch[col][i] for col in wanted}
            yield _row_example(row, fields, label_columns, where)


def _load_saved(folder: Path) -> Any:
    import datasets

    try:
        ds = datasets.load_from_disk(str(folder))
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(
            f"could not read the saved dataset '{folder}' ({reason}); re-save it with save_to_disk"
        ) from None
    if isinstance(ds, datasets.DatasetDict):
        if "train" in ds:
            return ds["train"]
        if len(ds) == 1:
            return next(iter(ds.values()))
        raise DataError(
            f"saved dataset '{folder}' has no 'train' split (splits: {', '.join(ds)}); pass the split's subfolder"
        )
    return ds


def _load_hub(name: str) -> Any:
    import datasets

    try:
        # Streaming: a Hub dataset may be far bigger than memory or disk.
        return datasets.load_dataset(name, split="train", streaming=True)
    except Exception:
        raise DataError(
            f"could not load dataset 'hf:{name}' from the Hugging Face Hub (no network or no such dataset); "
            f"on a machine with access run datasets.load_dataset('{name}').save_to_disk('DIR'), "
            "copy DIR here and pass its path"
        ) from None


def _read_builtin(count: int, seed: int, fields: Fields, label_columns: Sequence[str]) -> Iterator[Example]:
    from dlms.data.corpus import LABELS, generate_examples, review_label

    for kind in ("prompt", "messages"):
        if kind in fields:
            raise _missing_column(kind, fields[kind], "builtin", ["text", *LABELS])
    for col in label_columns:
        if col not in LABELS:
            raise _missing_column("label", col, "builtin", list(LABELS))
    for ex in generate_examples(count, seed):
        ex["review"] = review_label(ex["sentiment"], ex["topic"])
        yield {"text": ex["text"], "labels": {col: _label_value(ex.get(col)) for col in label_columns}}


# --------------------------------------------------------------------------------------------
# Public entry points


def read_examples(
    path: str,
    text_column: str = "text",
    label_columns: Sequence[str] = (),
    max_examples: int | None = None,
    builtin_examples: int = 20000,
    seed: int = 0,
    prompt_column: str | None = None,
    response_column: str = "response",
    task_column: str | None = None,
    messages_column: str | None = None,
    skipped: Counter | None = None,
) -> Iterator[Example]:
    """Stream `{"text": str, "labels": {col: str | None}}` from `path` (see the module docstring);
    with `prompt_column`, `{"prompt", "response", "task", "labels"}` from those columns instead
    (`text_column` is then not read); with `messages_column`, the same from a column of chat
    messages (chat.py), the chat rows that end with no assistant turn skipped and counted in
    `skipped[NO_ASSISTANT]` (when given) as the stream is read.

    Examples whose text (response) is empty or whitespace-only are skipped. At most `max_examples`
    examples (the first ones) are yielded. Path problems (missing path,
    unsupported extension, binary or empty file, missing column) raise DataError here, before the
    first example; "no examples found" is raised when the stream ends empty.
    """
    path = str(path)
    label_columns = list(label_columns)
    fields = text_fields(text_column, prompt_column, response_column, task_column, messages_column)
    if max_examples is not None and max_examples < 1:
        raise DataError(f"max_examples must be a positive integer or None, got {max_examples}")
    count = parse_builtin(path, builtin_examples)
    if count is not None:
        stream = _read_builtin(count, seed, fields, label_columns)
    elif path.startswith("hf:"):
        stream = _read_hf_dataset(_load_hub(path[3:]), path, fields, label_columns)
    else:
        p = _check_exists(path)
        if p.is_dir() and is_hf_saved_dataset(p):
            stream = _read_hf_dataset(_load_saved(p), path, fields, label_columns)
        elif p.is_dir():
            files = _data_files(p)
            if not files:
                raise DataError(f"folder '{path}' has no .txt/.jsonl/.csv/.tsv files; add data files or {_FIX}")
            for f in files:  # fail early on any bad file, not halfway through a build
                check_text_file(f)
            stream = _chain_files(files, fields, label_columns)
        else:
            stream = _read_file(p, fields, label_columns)
    # Whitespace-only texts (responses) carry nothing to learn (and .txt files skip them anyway).
    what = "text" if "text" in fields else "response"
    seen: Counter = Counter()  # chat rows skipped so far (for the error when all of them are)
    stream = (ex for ex in _counted_skips(stream, seen, skipped) if ex[what].strip())
    return _limited(stream, max_examples, path, what, seen)


def _counted_skips(stream: Iterator[Example | None], seen: Counter,
                   skipped: Counter | None) -> Iterator[Example]:
    """The examples of `stream` without the skipped rows (None), counted in `seen` and `skipped`."""
    for ex in stream:
        if ex is None:
            seen[NO_ASSISTANT] += 1
            if skipped is not None:
                skipped[NO_ASSISTANT] += 1
            continue
        yield ex


def _chain_files(files: list[Path], fields: Fields, label_columns: Sequence[str]) -> Iterator[Example]:
    for f in files:
        yield from _read_file(f, fields, label_columns)


def _limited(stream: Iterator[Example], max_examples: int | None, path: str, what: str = "text",
             seen: Counter | None = None) -> Iterator[Example]:
    # Pull the first example now so column errors surface at the call, not at the first next().
    try:
        first = next(stream)
    except StopIteration:
        if seen and seen[NO_ASSISTANT]:
            raise DataError(f"none of the {seen[NO_ASSISTANT]} rows of '{path}' ends with an assistant turn, so "
                            "none has a response to learn; each row's messages must end with "
                            '{"role": "assistant", "content": ...} (the response)') from None
        raise DataError(f"no examples found in '{path}'; the data has no non-blank {what}") from None
    return _rest(first, stream, max_examples)


def _rest(first: Example, stream: Iterator[Example], max_examples: int | None) -> Iterator[Example]:
    yield first
    n = 1
    for ex in stream:
        if max_examples is not None and n >= max_examples:
            return
        yield ex
        n += 1


def content_fingerprint(path: str, builtin_examples: int = 20000, seed: int = 0) -> str:
    """sha256 identifying the data at `path`, for cache keys (streamed: files are hashed in chunks).

    Files: their bytes and relative names. Builtin: the example count, the seed and the corpus
    package's source (so a changed generator invalidates the cache). Hub datasets: the name only.
    """
    path = str(path)
    h = hashlib.sha256()
    count = parse_builtin(path, builtin_examples)
    if count is not None:
        h.update(f"builtin:{count}:{seed}".encode())
        import dlms.data.corpus as corpus

        root = Path(corpus.__file__).parent
        for src in sorted(root.rglob("*.py")):
            h.update(src.relative_to(root).as_posix().encode() + b"\0" + src.read_bytes())
        return h.hexdigest()
    if path.startswith("hf:"):
        h.update(path.encode())
        return h.hexdigest()
    p = _check_exists(path)
    if p.is_dir() and is_hf_saved_dataset(p):
        files = sorted((f for f in p.rglob("*") if f.is_file()), key=lambda f: f.relative_to(p).as_posix())
        root = p
    elif p.is_dir():
        files, root = _data_files(p), p
    else:
        files, root = [p], p.parent
    for f in files:
        h.update(f.relative_to(root).as_posix().encode() + b"\0")
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()
