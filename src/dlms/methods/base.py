"""What every method shares: the special token ids and the shape of a loss."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class SpecialTokens:
    """Ids of the special tokens and the vocabulary size (including added tokens)."""

    pad: int
    bos: int
    eos: int
    mask: int
    vocab_size: int

    @classmethod
    def from_dict(cls, ids: dict) -> "SpecialTokens":
        return cls(**{k: int(ids[k]) for k in ("pad", "bos", "eos", "mask", "vocab_size")})


@dataclass
class LossOutput:
    """The scalar to minimise and the figures worth logging (floats, already detached)."""

    loss: torch.Tensor
    metrics: dict[str, float] = field(default_factory=dict)


def scored_positions(x0: torch.Tensor, special: SpecialTokens) -> torch.Tensor:
    """x0 [B, L] -> bool [B, L]: the tokens a likelihood is normalised by (not pad, not bos)."""
    return (x0 != special.pad) & (x0 != special.bos)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The backbone inside a DistributedDataParallel wrapper (or the model itself)."""
    return getattr(model, "module", model)
