"""Paths made from user input: file names from labels, and output paths checked before any work.

Used by every command that writes (`dlms train`'s run folder, `dlms eval --output`, the DGLM
stages, classifiers and reports), so a path that cannot be written fails at once, in one line,
before minutes of work are lost.
"""
from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

from .errors import ConfigError

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def safe_stem(text: str) -> str:
    """A file name made from a label: characters other than [A-Za-z0-9_.-] become '_' and
    leading dots are dropped, so it never holds a path separator and '..' cannot climb out of
    the folder it is joined to. '../x' -> '_x'; a label of only dots or nothing -> '_'."""
    return _UNSAFE.sub("_", text).lstrip(".") or "_"


def check_writable(path: str | Path, what: str, folder: bool = True) -> Path:
    """`path` (a folder, or with `folder=False` a file) can be written, or a ConfigError naming
    `what` (a flag or a config key), the reason and the fix. Nothing is left behind: the nearest
    existing folder on the way is proven writable with a file created and removed there (a
    permission test would pass for root on a read-only or virtual file system)."""
    path = Path(path).expanduser()
    if folder and path.exists() and not path.is_dir():
        raise ConfigError(f"cannot write {what} '{path}': it is a file, not a folder; pass another path")
    if not folder and path.is_dir():
        raise ConfigError(f"cannot write {what} '{path}': it is a folder; pass a file path")
    probe = path if folder else path.parent
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"cannot write {what} '{path}': '{probe}' is a file, not a folder; pass another path")
    test = probe / f".write-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        test.write_bytes(b"")
        test.unlink()
    except OSError as exc:
        raise ConfigError(f"cannot write {what} '{path}' ({exc.strerror or type(exc).__name__}); "
                          "pass a path you can write to") from None
    return path


def looks_like_path(name: str) -> bool:
    """Whether a model or tokenizer name is meant as a local path rather than a Hub id: it starts
    like one (/, ./, ../, ~), or has more slashes than `owner/name` allows."""
    return name.startswith(("/", "./", "../", "~", ".\\", "..\\")) or name in (".", "..") or name.count("/") > 1


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first non-blank line of an exception's message (its type when it has none), cut to
    `limit` characters: what a one-line error quotes of a library's own error."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
