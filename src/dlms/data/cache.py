"""On-disk cache of tokenized datasets (and trained tokenizers), memory-mapped on load.

Layout of one dataset entry, `<cache_dir>/datasets/<key>/`:

    train_ids.npy     int32 [N_train, L]   token ids, one row per example or packed block
    val_ids.npy       int32 [N_val, L]
    train_labels.npy  int64 [N_train, K]   optional; -1 = missing label
    val_labels.npy    int64 [N_val, K]     optional
    train_prompt_len.npy  int32 [N_train]  prompt/response data: where each row's response starts
    val_prompt_len.npy    int32 [N_val]
    meta.json         what was built and how (see builder.py)
    tokenizer/        the tokenizer, written by save_pretrained

Trained BPE tokenizers are also cached on their own in `<cache_dir>/tokenizers/<key>/`, so a
change of seq_len or layout does not retrain them.

An entry is written into a temporary sibling folder and renamed into place only when complete,
so a crash or a concurrent build never leaves a half-written entry under its final name.
Arrays are plain `.npy` files (never pickles) and metadata is JSON.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from dlms.errors import DataError

FORMAT_VERSION = 1
META_FILE = "meta.json"
_HEADER_BYTES = 128  # fixed .npy header size: room for any realistic shape, patched at close


def default_cache_dir() -> Path:
    """`$DLMS_CACHE_DIR` if set, else `~/.cache/dlms`."""
    env = os.environ.get("DLMS_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "dlms"


def cache_key(parts: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of `parts` (plus the format version)."""
    payload = json.dumps({"format_version": FORMAT_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def entry_dir(cache_dir: str | Path, kind: str, key: str) -> Path:
    """`<cache_dir>/<kind>/<key>`; kind is "datasets" or "tokenizers". DataError when the cache
    folder cannot be made there (it, or a folder above it, is a file)."""
    folder = Path(cache_dir).expanduser() / kind
    for part in (folder, *folder.parents):
        if part.exists():
            if not part.is_dir():
                raise DataError(f"the cache folder '{cache_dir}' cannot be used: '{part}' is a file; point "
                                "DLMS_CACHE_DIR (or data.cache_dir) at a folder")
            break
    return folder / key


def is_complete(entry: Path) -> bool:
    """An entry exists once it was renamed into place; meta.json is its last file written."""
    return (entry / META_FILE).is_file()


@contextlib.contextmanager
def staged_entry(final: Path, replace: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder of `final`; on success rename it to `final`.

    If another process finished the same entry first, ours is discarded (theirs is identical)
    unless `replace` is set (a forced rebuild), in which case the old entry is swapped out.
    On an exception the temporary folder is removed.
    """
    tmp = final.parent / f".tmp-{final.name[:16]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
    except OSError as exc:
        raise DataError(f"cannot write the cache folder '{final.parent}' ({exc.strerror or type(exc).__name__}); "
                        "point DLMS_CACHE_DIR (or data.cache_dir) at a folder you can write to") from None
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists() and replace:
        old = final.parent / f".old-{final.name[:16]}-{uuid.uuid4().hex[:8]}"
        with contextlib.suppress(OSError):
            os.rename(final, old)
            # Readers that memory-mapped the old files keep them alive until they close.
            shutil.rmtree(old, ignore_errors=True)
    try:
        os.rename(tmp, final)
    except OSError:
        if not is_complete(final):
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # a concurrent build won the race


class NpyRowWriter:
    """Append fixed-width rows to a `.npy` file without knowing the row count in advance.

    A placeholder header of fixed size is written first and rewritten with the real shape on
    `close()`, so rows stream straight to disk (corpora larger than memory) with no second copy.
    `width=None` writes a 1-D array [N] of single values instead.
    """

    def __init__(self, path: str | Path, width: int | None, dtype: str | np.dtype) -> None:
        self.path = Path(path)
        self.width = None if width is None else int(width)
        self.dtype = np.dtype(dtype).newbyteorder("<")
        self.rows = 0
        self._fh = self.path.open("wb")
        self._fh.write(b"\0" * _HEADER_BYTES)

    def append(self, rows: np.ndarray) -> None:
        """Write `rows`, shape [n, width] (or [n] with width None)."""
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if self.width is None:
            if rows.ndim != 1:
                raise ValueError(f"expected values of shape [n], got {rows.shape}")
        elif rows.ndim != 2 or rows.shape[1] != self.width:
            raise ValueError(f"expected rows of shape [n, {self.width}], got {rows.shape}")
        self._fh.write(rows.tobytes())
        self.rows += rows.shape[0]

    def close(self) -> int:
        """Write the final header and close; returns the number of rows."""
        if self._fh.closed:
            return self.rows
        self._fh.seek(0)
        shape = (self.rows,) if self.width is None else (self.rows, self.width)
        self._fh.write(_npy_header(shape, self.dtype))
        self._fh.close()
        return self.rows

    def __enter__(self) -> NpyRowWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _npy_header(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    """A version 1.0 .npy header of exactly _HEADER_BYTES bytes (spec: space-padded, ends in newline)."""
    d = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    text = repr(d).encode("latin1")
    body_len = _HEADER_BYTES - 10  # magic (6) + version (2) + header length (2)
    if len(text) + 1 > body_len:
        raise ValueError(f"shape {shape} does not fit in a {_HEADER_BYTES}-byte .npy header")
    text = text + b" " * (body_len - len(text) - 1) + b"\n"
    return np.lib.format.magic(1, 0) + body_len.to_bytes(2, "little") + text


def load_array(path: str | Path) -> np.ndarray:
    """Memory-map a cached `.npy` array read-only (pickles are refused)."""
    return np.load(path, mmap_mode="r", allow_pickle=False)


def write_meta(entry: Path, meta: dict[str, Any]) -> None:
    (entry / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True), encoding="utf-8")


def read_meta(entry: Path) -> dict[str, Any]:
    return json.loads((entry / META_FILE).read_text(encoding="utf-8"))
