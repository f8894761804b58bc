"""Conditioning signals for the backbone: diffusion time and class labels.

Both become one vector per sequence, `cond` [B, D], that modulates every block through an
adaptive norm (shift, scale and gate) or FiLM (scale and shift of the block's output), both
zero-initialised so a new model starts unconditioned.
"""
from __future__ import annotations

import math

import torch
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of t in [0, 1]: [B] -> [B, dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = (t.float() * 1000.0)[:, None] * freqs[None, :]
    return torch.cat([args.cos(), args.sin()], dim=-1)


class Conditioner(nn.Module):
    """time [B] and/or labels [B] -> cond [B, D]. Label `num_classes` is the null class."""

    def __init__(self, d_model: int, time_conditioning: bool, num_classes: int):
        super().__init__()
        self.d_model = d_model
        self.num_classes = num_classes
        self.time_mlp = (
            nn.Sequential(nn.Linear(d_model, d_model), nn.SiLU(), nn.Linear(d_model, d_model))
            if time_conditioning
            else None
        )
        self.class_embed = nn.Embedding(num_classes + 1, d_model) if num_classes > 0 else None

    @property
    def null_class(self) -> int:
        return self.num_classes

    def forward(self, time: torch.Tensor | None, labels: torch.Tensor | None, batch: int,
                device: torch.device) -> torch.Tensor:
        cond = torch.zeros(batch, self.d_model, device=device)
        if self.time_mlp is not None:
            if time is None:
                raise ValueError("this backbone is time-conditioned: pass time [B]")
            cond = cond + self.time_mlp(timestep_embedding(time.expand(batch), self.d_model))
        if self.class_embed is not None:
            if labels is None:
                labels = torch.full((batch,), self.null_class, device=device, dtype=torch.long)
            cond = cond + self.class_embed(labels)
        return cond


class AdaptiveModulation(nn.Module):
    """cond [B, D] -> `n` modulation vectors [B, 1, D] each; zero at init (identity block)."""

    def __init__(self, d_model: int, n: int):
        super().__init__()
        self.n = n
        self.proj = nn.Sequential(nn.SiLU(), nn.Linear(d_model, n * d_model))
        nn.init.zeros_(self.proj[1].weight)
        nn.init.zeros_(self.proj[1].bias)

    def forward(self, cond: torch.Tensor) -> list[torch.Tensor]:
        return list(self.proj(cond)[:, None, :].chunk(self.n, dim=-1))
