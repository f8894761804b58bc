"""One denoising step of one request as JSON for a live view: the canvas, what changed, how sure.

A frame is {"step", "total", "rows": [{"tokens", "changed", "confidence"}]}: per sample row,
`tokens` is the text piece of every canvas position from where the text starts (None where
the position is still masked; "" for padding), `changed` the positions whose token differs from
the previous frame, `confidence` each position's confidence from the sampler where it has one
(samplers' `confidence`, None elsewhere). Positions never move, so a page can draw each frame in
place and replay them with a slider.
"""
from __future__ import annotations

import math
from typing import Callable

import torch


class TokenPieces:
    """Token id -> its text piece, memoised (a frame decodes every position of every row)."""

    def __init__(self, tokenizer, mask_id: int, pad_id: int, eos_id: int):
        self.tokenizer, self.mask_id, self.pad_id, self.eos_id = tokenizer, mask_id, pad_id, eos_id
        self.cache: dict[int, str] = {}

    def __call__(self, token: int) -> str | None:
        if token == self.mask_id:
            return None
        if token == self.pad_id:
            return ""
        if token == self.eos_id:
            return "\u00b6"  # a pilcrow: the text ends here
        if token not in self.cache:
            self.cache[token] = self.tokenizer.decode([token], skip_special_tokens=True)
        return self.cache[token]


def frame(step: int, total: int, ids: torch.Tensor, previous: torch.Tensor | None,
          confidence: torch.Tensor | None, start: int, piece: Callable[[int], str | None]) -> dict:
    """The frame of rows `ids` [n, W] (positions from `start` on), against `previous` [n, W]
    (None: nothing changed yet), `confidence` float [n, W] or None."""
    rows = []
    ids_list = ids[:, start:].tolist()
    changed = None if previous is None else (ids[:, start:] != previous[:, start:])
    conf = None if confidence is None else confidence[:, start:].tolist()
    for r, row in enumerate(ids_list):
        rows.append({
            "tokens": [piece(t) for t in row],
            "changed": [] if changed is None else changed[r].nonzero()[:, 0].tolist(),
            "confidence": None if conf is None else [None if math.isnan(c) else round(c, 3) for c in conf[r]],
        })
    return {"step": step, "total": total, "rows": rows}
