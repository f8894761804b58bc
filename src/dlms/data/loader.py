"""Batches of token rows for training (shuffled, sharded, resumable) and evaluation (in order)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from dlms.data.tokenized import TokenSplit
from dlms.errors import DataError


def _label_column_index(split: TokenSplit, label_column: str | None) -> int | None:
    return None if label_column is None else split.label_index(label_column)


def _batch(split: TokenSplit, rows: np.ndarray, label_index: int | None) -> dict[str, Any]:
    """{"input_ids": LongTensor [B, L], "labels": LongTensor [B] or None, "prompt_len": LongTensor
    [B] or None} for row indices `rows` [B]; prompt_len (prompt/response data) is where each row's
    response starts, what a method's loss holds clean before (methods/base.py, `response_mask`)."""
    # Fancy indexing reads only the needed rows of the memmap into memory.
    input_ids = torch.from_numpy(np.asarray(split.ids[rows], dtype=np.int64))
    labels = None
    if label_index is not None:
        labels = torch.from_numpy(np.asarray(split.labels[rows, label_index], dtype=np.int64))
    prompt_len = getattr(split, "prompt_len", None)
    if prompt_len is not None:
        prompt_len = torch.from_numpy(np.asarray(prompt_len[rows], dtype=np.int64))
    return {"input_ids": input_ids, "labels": labels, "prompt_len": prompt_len}


class BatchIterator:
    """Endless epoch-based iteration over a TokenSplit with a resumable position.

    Epoch e shuffles with `np.random.default_rng([seed, e]).permutation(N)`; rank r takes
    `perm[r::world_size]`, truncated to `N // world_size` rows so every rank has the same number
    of batches, and yields them in consecutive batches of `batch_size` (the last partial batch is
    dropped). The position is (epoch, batches already yielded this epoch), so
    `load_state_dict(state_dict())` on a fresh iterator continues with exactly the same batches.

    Each batch: {"input_ids": LongTensor [B, L], "labels": LongTensor [B] or None, "prompt_len":
    LongTensor [B] or None}; labels are label indices of `label_column` (-1 = missing) when one is
    given, prompt_len where each row's response starts when the split has prompts.
    """

    def __init__(
        self,
        split: TokenSplit,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        label_column: str | None = None,
    ) -> None:
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"bad batch_size={batch_size}, rank={rank}, world_size={world_size}")
        n = len(split)
        if n < batch_size * world_size:
            raise DataError(
                f"the split has {n} rows, fewer than batch_size x world_size = {batch_size} x {world_size}; "
                "lower the batch size or add data"
            )
        self.split = split
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.label_column = label_column
        self._label_index = _label_column_index(split, label_column)
        self.rows_per_rank = n // world_size
        self.steps_per_epoch = self.rows_per_rank // batch_size
        self.epoch = 0
        self.position = 0  # batches already yielded in the current epoch
        self._order_epoch: int | None = None
        self._order: np.ndarray | None = None

    def _rank_order(self) -> np.ndarray:
        """int64 [rows_per_rank]: this rank's row indices for the current epoch (cached per epoch)."""
        if self._order_epoch != self.epoch:
            perm = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.split))
            self._order = perm[self.rank :: self.world_size][: self.rows_per_rank]
            self._order_epoch = self.epoch
        return self._order

    def __iter__(self) -> BatchIterator:
        return self

    def __next__(self) -> dict[str, Any]:
        if self.position >= self.steps_per_epoch:
            self.epoch += 1
            self.position = 0
        start = self.position * self.batch_size
        rows = self._rank_order()[start : start + self.batch_size]
        self.position += 1
        return _batch(self.split, rows, self._label_index)

    def state_dict(self) -> dict[str, int]:
        """{"epoch": int, "position": int}: JSON-serialisable."""
        return {"epoch": int(self.epoch), "position": int(self.position)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a `state_dict()` taken with the same split, batch size, seed and ranks."""
        epoch, position = int(state["epoch"]), int(state["position"])
        if epoch < 0 or not 0 <= position <= self.steps_per_epoch:
            raise DataError(
                f"data iterator state {state} does not fit this run ({self.steps_per_epoch} batches per epoch); "
                "resume with the same data, batch size and world size"
            )
        self.epoch, self.position = epoch, position


def eval_batches(
    split: TokenSplit, batch_size: int, label_column: str | None = None, max_batches: int | None = None
) -> Iterator[dict[str, Any]]:
    """Batches of consecutive rows in order, last partial batch kept; at most `max_batches`.

    Each batch: {"input_ids": LongTensor [B, L], "labels": LongTensor [B] or None, "prompt_len":
    LongTensor [B] or None}.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    label_index = _label_column_index(split, label_column)
    for b, start in enumerate(range(0, len(split), batch_size)):
        if max_batches is not None and b >= max_batches:
            return
        rows = np.arange(start, min(start + batch_size, len(split)))
        yield _batch(split, rows, label_index)
