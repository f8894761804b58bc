"""A built dataset as it is read back: two splits of token arrays (memory-mapped from the cache),
the tokenizer and the build metadata. builder.py writes what this file reads (cache.py: the folder).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dlms.data import auto_length, cache
from dlms.data.prompt_response import describe_cuts
from dlms.data.tokenizer import load_tokenizer, special_ids
from dlms.errors import DataError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

SPLITS = ("train", "val")


@dataclass
class TokenSplit:
    """One split of a tokenized dataset.

    ids:    int32 [N, L] token ids (a read-only memmap when loaded from the cache)
    labels: int64 [N, K] label indices, -1 = missing; None when no label columns were built
    label_columns: the K column names, in the order of `labels`' second axis
    pad_id: the padding id, used by `num_tokens`
    prompt_len: int32 [N] where each row's response starts (prompt/response data); None for text
    """

    ids: np.ndarray
    labels: np.ndarray | None = None
    label_columns: list[str] = field(default_factory=list)
    pad_id: int | None = None
    known_num_tokens: int | None = None  # from meta.json; saves a pass over the array
    prompt_len: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @property
    def seq_len(self) -> int:
        return int(self.ids.shape[1])

    @functools.cached_property
    def num_tokens(self) -> int:
        """Number of non-pad tokens in the split."""
        if self.known_num_tokens is not None:
            return self.known_num_tokens
        if self.pad_id is None:
            return int(self.ids.size)
        step = 1 << 16  # rows per chunk: never pull a whole memmap into memory
        return int(sum(np.count_nonzero(self.ids[i : i + step] != self.pad_id) for i in range(0, len(self), step)))

    def head_tokens(self, budget: int) -> "TokenSplit":
        """The first rows holding about `budget` non-pad tokens (at least one row): a smaller
        unique-data budget drawn from the same text, for data-scaling studies."""
        if self.pad_id is None:
            rows = -(-budget // self.seq_len)
        else:
            counts = np.cumsum([np.count_nonzero(row != self.pad_id) for row in np.asarray(self.ids[: budget + 1])])
            rows = int(np.searchsorted(counts, budget) + 1)
        if rows > len(self):
            raise DataError(f"the training split has {self.num_tokens:,} tokens, fewer than the budget of "
                            f"{budget:,} asked for (data.train_tokens in a run config); ask for fewer tokens "
                            "or use more data")
        rows = max(1, rows)
        return TokenSplit(self.ids[:rows], None if self.labels is None else self.labels[:rows],
                          list(self.label_columns), self.pad_id,
                          prompt_len=None if self.prompt_len is None else self.prompt_len[:rows])

    def texts(self, tokenizer: PreTrainedTokenizerBase, n: int = 4, skip_special_tokens: bool = True) -> list[str]:
        """Decode the first `n` rows (pad tokens are always dropped)."""
        out = []
        for row in np.asarray(self.ids[:n]):
            ids = [int(t) for t in row if self.pad_id is None or t != self.pad_id]
            out.append(tokenizer.decode(ids, skip_special_tokens=skip_special_tokens))
        return out

    def label_index(self, column: str) -> int:
        """Position of `column` along `labels`' second axis (DataError if it was not built)."""
        if self.labels is None or column not in self.label_columns:
            raise DataError(
                f"label column '{column}' is not in this dataset (built columns: "
                f"{', '.join(self.label_columns) or 'none'}); "
                f"build with layout='padded', label_columns=['{column}']"
            )
        return self.label_columns.index(column)


@dataclass
class TokenizedDataset:
    """A built dataset: two splits, the tokenizer and the build metadata."""

    train: TokenSplit
    val: TokenSplit
    tokenizer: Any
    label_names: dict[str, list[str]]
    layout: str
    seq_len: int
    cache_path: Path
    meta: dict[str, Any]
    from_cache: bool = False  # True when loaded from the cache without tokenizing

    @property
    def special_ids(self) -> dict[str, int]:
        """`{"pad", "bos", "eos", "mask", "vocab_size"}` of the tokenizer."""
        return special_ids(self.tokenizer)

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    @property
    def seq_len_note(self) -> str | None:
        """One line on how `seq_len` was fitted to the data (built with seq_len=None); None when
        seq_len was given explicitly."""
        auto = self.meta.get("seq_len_auto")
        return auto_length.describe(auto, self.layout) if auto else None

    @property
    def prompted(self) -> bool:
        """True for prompt/response data (rows carry `prompt_len`)."""
        return self.meta.get("prompt_response") is not None

    @property
    def notes(self) -> list[str]:
        """Lines a training run logs about the data: prompt/response rows cut or dropped."""
        if not self.prompted:
            return []
        note = describe_cuts(self.meta["splits"], self.seq_len, int(self.meta.get("skipped") or 0))
        return [note] if note else []

    @classmethod
    def load(cls, path: str | Path, tokenizer: PreTrainedTokenizerBase | None = None) -> TokenizedDataset:
        """Open a cache entry folder (memory-mapped); the tokenizer is read from `path/tokenizer`."""
        entry = Path(path)
        if not cache.is_complete(entry):
            raise DataError(f"'{entry}' is not a tokenized dataset (no {cache.META_FILE}); rebuild the dataset")
        meta = cache.read_meta(entry)
        if meta.get("format_version") != cache.FORMAT_VERSION:
            raise DataError(
                f"dataset '{entry}' has cache format {meta.get('format_version')}, "
                f"expected {cache.FORMAT_VERSION}; rebuild it"
            )
        if tokenizer is None:
            tokenizer = load_tokenizer(str(entry / "tokenizer"))
        columns = list(meta["label_columns"])
        splits = {}
        for name in SPLITS:
            labels_file = entry / f"{name}_labels.npy"
            prompt_file = entry / f"{name}_prompt_len.npy"
            splits[name] = TokenSplit(
                ids=cache.load_array(entry / f"{name}_ids.npy"),
                labels=cache.load_array(labels_file) if labels_file.exists() else None,
                label_columns=columns,
                pad_id=meta["special_ids"]["pad"],
                known_num_tokens=meta["splits"][name]["tokens"],
                prompt_len=cache.load_array(prompt_file) if prompt_file.exists() else None,
            )
        return cls(
            train=splits["train"],
            val=splits["val"],
            tokenizer=tokenizer,
            label_names={k: list(v) for k, v in meta["label_names"].items()},
            layout=meta["layout"],
            seq_len=int(meta["seq_len"]),
            cache_path=entry,
            meta=meta,
        )
