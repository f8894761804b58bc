"""DGLM's data: the texts of a config's dataset, split into train and held-out parts, and
prefix / continuation token batches for the decoder.

The split is the run trainer's (`split_mask`: the last `val_fraction`, or a seeded random
subset), so a dlms AR decoder trained on the same file with the same `val_fraction` never saw
the held-out texts either.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data.builder import split_mask
from ..data.sources import read_examples
from ..errors import DataError
from .config import DglmDataConfig


@dataclass
class SplitTexts:
    train: list[str]
    val: list[str]
    train_labels: dict[str, list[str | None]]
    val_labels: dict[str, list[str | None]]


def load_split_texts(cfg: DglmDataConfig, label_columns: tuple[str, ...] = ()) -> SplitTexts:
    """The dataset's texts (and the given label columns), split into train and held-out."""
    rows = list(read_examples(cfg.dataset, text_column=cfg.text_column, label_columns=list(label_columns),
                              max_examples=cfg.max_texts, builtin_examples=cfg.builtin_examples, seed=cfg.seed))
    if len(rows) < 4:
        raise DataError(f"'{cfg.dataset}' has {len(rows)} texts; DGLM needs at least a few hundred")
    held_out = split_mask(len(rows), cfg.val_fraction, cfg.split, cfg.seed)
    part = {False: [], True: []}
    for row, is_val in zip(rows, held_out.tolist()):
        part[is_val].append(row)

    def labels(chosen: list[dict]) -> dict[str, list[str | None]]:
        return {col: [r["labels"][col] for r in chosen] for col in label_columns}

    return SplitTexts([r["text"] for r in part[False]], [r["text"] for r in part[True]],
                      labels(part[False]), labels(part[True]))


class PairTokenizer:
    """Token batches for the decoder: prefixes left-padded after a start token, continuations
    right-padded and ended by the end token. Works with a dlms or a Hugging Face tokenizer."""

    def __init__(self, tokenizer, max_prefix_tokens: int, max_continuation_tokens: int):
        self.tokenizer = tokenizer
        self.max_prefix, self.max_continuation = max_prefix_tokens, max_continuation_tokens
        self.eos_id = tokenizer.eos_token_id
        self.bos_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else self.eos_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id
        if self.eos_id is None:
            raise DataError("the decoder's tokenizer has no end-of-text token; use a causal LM tokenizer")

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def prefixes(self, texts: list[str], device: torch.device | str = "cpu") -> torch.Tensor:
        """[B, Lp]: <bos> + the prefix's last tokens, left-padded."""
        rows = [[self.bos_id] + self._ids(t)[-(self.max_prefix - 1):] for t in texts]
        width = max(len(r) for r in rows)
        return torch.tensor([[self.pad_id] * (width - len(r)) + r for r in rows], device=device)

    def continuations(self, texts: list[str], device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """(ids [B, Lc], real-token mask [B, Lc]): " " + continuation + <eos>, right-padded.
        The leading space makes the pieces tokenize as they do inside the whole text."""
        rows = [(self._ids(" " + t) + [self.eos_id])[:self.max_continuation] for t in texts]
        width = max(len(r) for r in rows)
        ids = torch.tensor([r + [self.pad_id] * (width - len(r)) for r in rows], device=device)
        mask = torch.tensor([[True] * len(r) + [False] * (width - len(r)) for r in rows], device=device)
        return ids, mask

    def whole(self, prefix: str, continuation: str) -> tuple[list[int], int]:
        """(<bos> prefix continuation <eos>, the count of leading prefix ids), untruncated: the
        same pieces as `prefixes` and `continuations`, for scoring one text as a whole."""
        head = [self.bos_id] + self._ids(prefix)
        return head + self._ids(" " + continuation) + [self.eos_id], len(head)

    def decode(self, ids: torch.Tensor) -> list[str]:
        """Continuation ids [B, L] -> texts, cut at the first end token."""
        texts = []
        for row in ids.tolist():
            if self.eos_id in row:
                row = row[:row.index(self.eos_id)]
            texts.append(self.tokenizer.decode(row, skip_special_tokens=True).strip())
        return texts
