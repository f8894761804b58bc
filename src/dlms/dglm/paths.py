"""File names made from user text, and output paths checked before any work is done."""
from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import ConfigError

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def safe_stem(text: str) -> str:
    """A file name made from a label: characters other than [A-Za-z0-9_.-] become '_' and
    leading dots are dropped, so it never holds a path separator and '..' cannot climb out of
    the folder it is joined to. '../x' -> '_x'; a label of only dots or nothing -> '_'."""
    return _UNSAFE.sub("_", text).lstrip(".") or "_"


def check_writable(path: str | Path, what: str, folder: bool = True) -> Path:
    """Check, creating nothing, that `path` can be written: a folder (`folder`) or a file whose
    folder is `path.parent`. That folder, or its nearest existing ancestor, must be a writable
    folder. `what` names the path in the message (a flag or a config key)."""
    path = Path(path).expanduser()
    target = path if folder else path.parent
    probe = target
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"cannot write {what} '{path}': '{probe}' is a file, not a folder; pass another path")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write {what} '{path}': the folder '{probe}' is not writable; pass another path")
    return path
