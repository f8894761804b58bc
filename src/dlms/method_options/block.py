"""The options of block diffusion (BD3-LM): dlms/methods/block.py."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .base import MethodConfig


@dataclass
class BlockOptions(MethodConfig):
    name: Literal["block"] = "block"
    # A name in dlms.schedules.SCHEDULES of the masking kind; auto: loglinear. Training saves
    # the resolved name.
    schedule: str = "auto"
    antithetic: bool = True  # stratified t across the batch (per block): lower-variance loss
    eps: float = 1e-3  # smallest mask probability (sets t_min): keeps the 1/t weight finite
    # Tokens per block. Attention is bidirectional inside a block and causal across blocks;
    # 1 is autoregressive, data.seq_len is plain masked diffusion.
    block_size: int = 4

    RANGES = (("eps", lambda v: 0 < v < 0.5, "in (0, 0.5)"),
              ("block_size", lambda v: v >= 1, "at least 1 (tokens per block)"))
