"""Streaming one split's rows to disk in the chosen layout (the data builder's writer).

`SplitWriter` takes one example at a time (its tokens, or a prompt/response pair's head and
response) and writes `<split>_ids.npy` int32 [N, seq_len], and when asked `<split>_labels.npy`
int64 [N, K] and `<split>_prompt_len.npy` int32 [N] (see builder.py and cache.py for the
layouts). `close()` returns the split's counts: examples, rows, tokens, rows cut to fit
(`truncated`) and, for prompt/response rows, rows dropped because the prompt alone fills them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dlms.data import cache
from dlms.data.prompt_response import layout_row

FLUSH_ROWS = 4096  # padded layout: rows gathered before one block is written
FLUSH_TOKENS = 1 << 20  # packed layout: pending tokens that trigger cutting blocks (one concatenate per ~4 MB)


class SplitWriter:
    """Streams one split's rows to `<split>_ids.npy` (and `<split>_labels.npy`, `<split>_prompt_len.npy`) in the
    chosen layout."""

    def __init__(
        self,
        out: Path,
        split: str,
        layout: str,
        seq_len: int,
        ids: dict[str, int],
        label_maps: dict[str, dict[str, int]],
        prompted: bool = False,
    ) -> None:
        self.layout, self.seq_len, self.ids, self.label_maps = layout, seq_len, ids, label_maps
        self.rows = cache.NpyRowWriter(out / f"{split}_ids.npy", seq_len, np.int32)
        self.labels = None
        if label_maps:
            self.labels = cache.NpyRowWriter(out / f"{split}_labels.npy", len(label_maps), np.int64)
        self.stats = {"examples": 0, "rows": 0, "tokens": 0, "truncated": 0}
        self.prompt_len = None
        if prompted:
            self.prompt_len = cache.NpyRowWriter(out / f"{split}_prompt_len.npy", None, np.int32)
            self.stats["dropped"] = 0
        self._prompt_lens: list[int] = []
        self._pending: list[np.ndarray] = []  # packed: token runs not yet cut into blocks
        self._pending_len = 0
        self._padded: list[list[int]] = []  # padded: rows not yet written
        self._label_rows: list[list[int]] = []

    def add(self, tokens: list[int], labels: dict[str, str | None]) -> None:
        """Add one example's tokens (no special tokens) and its label values."""
        self.stats["examples"] += 1
        if self.layout == "packed":
            self._pending.append(np.asarray([*tokens, self.ids["eos"]], dtype=np.int32))
            self._pending_len += len(tokens) + 1
            if self._pending_len >= FLUSH_TOKENS:
                self._flush_packed()
            return
        seq = [self.ids["bos"], *tokens, self.ids["eos"]]
        if len(seq) > self.seq_len:  # a cut row keeps its start and loses its eos
            self.stats["truncated"] += 1
            seq = seq[: self.seq_len]
        self._add_row(seq, labels)

    def add_pair(self, head: list[int], response: list[int], labels: dict[str, str | None]) -> None:
        """Add one prompt/response example: its head (prompt_response.row_head) and response tokens."""
        self.stats["examples"] += 1
        laid = layout_row(head, response, self.ids["eos"], self.seq_len)
        if laid is None:  # no room for a single response token
            self.stats["dropped"] += 1
            return
        seq, cut = laid
        self.stats["truncated"] += int(cut)
        self._prompt_lens.append(len(head))
        self._add_row(seq, labels)

    def _add_row(self, seq: list[int], labels: dict[str, str | None]) -> None:
        self.stats["tokens"] += len(seq)
        self._padded.append(seq)
        if self.labels is not None:
            # Unseen (validation-only) or missing (None) values become -1.
            self._label_rows.append([m.get(labels.get(c), -1) for c, m in self.label_maps.items()])
        if len(self._padded) >= FLUSH_ROWS:
            self._flush_padded()

    def _flush_packed(self) -> None:
        """Cut whole seq_len blocks from the pending tokens; keep the remainder for the next call."""
        if not self._pending:
            return
        stream = np.concatenate(self._pending)
        n_blocks = len(stream) // self.seq_len
        if n_blocks:
            self.rows.append(stream[: n_blocks * self.seq_len].reshape(n_blocks, self.seq_len))
            self.stats["tokens"] += n_blocks * self.seq_len
        rest = stream[n_blocks * self.seq_len :]
        self._pending, self._pending_len = [rest], len(rest)

    def _flush_padded(self) -> None:
        if not self._padded:
            return
        block = np.full((len(self._padded), self.seq_len), self.ids["pad"], dtype=np.int32)
        for r, seq in enumerate(self._padded):
            block[r, : len(seq)] = seq
        self.rows.append(block)
        if self.labels is not None:
            self.labels.append(np.asarray(self._label_rows, dtype=np.int64).reshape(len(self._padded), -1))
        if self.prompt_len is not None:
            self.prompt_len.append(np.asarray(self._prompt_lens, dtype=np.int32))
        self._padded, self._label_rows, self._prompt_lens = [], [], []

    def close(self) -> dict[str, int]:
        """Write what is pending (the packed remainder is dropped), finish the files, return the stats."""
        if self.layout == "packed":
            self._flush_packed()
        else:
            self._flush_padded()
        self.stats["rows"] = self.rows.close()
        if self.labels is not None:
            self.labels.close()
        if self.prompt_len is not None:
            self.prompt_len.close()
        return self.stats
