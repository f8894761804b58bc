"""Classifier-free guidance: mix conditional and unconditional predictions.

logits = uncond + scale * (cond - uncond): scale 1 is the conditional model, 0 the
unconditional one, above 1 pushes towards the label.
"""
from __future__ import annotations

from typing import Callable

import torch


def mix_guidance(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """uncond + scale * (cond - uncond), in float32; exactly `cond` at scale 1."""
    cond, uncond = cond.float(), uncond.float()
    return cond if scale == 1.0 else uncond + scale * (cond - uncond)


def guided_logits(forward: Callable[[torch.Tensor | None], torch.Tensor], labels: torch.Tensor | None,
                  null_label: int, scale: float) -> torch.Tensor:
    """`forward(labels)` -> logits [B, ...]; returns the guided logits [B, ...].

    One batched call of size 2B when guidance is active, a single call otherwise.
    """
    if labels is None or scale == 1.0:
        return forward(labels)
    null = torch.full_like(labels, null_label)
    both = forward(torch.cat([labels, null]))
    cond, uncond = both.float().chunk(2)
    return mix_guidance(cond, uncond, scale)
