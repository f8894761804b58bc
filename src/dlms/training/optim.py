"""AdamW with linear warmup and cosine decay to a floor: the one optimizer and schedule of every run."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class OptimizerSettings:
    """What an optimiser step needs to know (a `TrainConfig` or a DGLM stage's config gives it)."""

    learning_rate: float
    weight_decay: float
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    grad_accum: int = 1
    ema_decay: float = 0.0  # 0: no moving average of the weights


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only: norms, biases and gains are not decayed."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(param_groups: list[dict], settings: OptimizerSettings) -> torch.optim.AdamW:
    """AdamW over `param_groups` (a group may set its own `lr` or `weight_decay`)."""
    return torch.optim.AdamW(param_groups, lr=settings.learning_rate, weight_decay=settings.weight_decay,
                             betas=settings.betas)


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Multiplier of the base learning rate at `step` (0-based)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, settings: OptimizerSettings, total_steps: int):
    """Linear warmup (at most half the run) then cosine decay to `min_lr_ratio` of each group's rate."""
    warmup = min(settings.warmup_steps, max(1, total_steps // 2))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, warmup, total_steps, settings.min_lr_ratio)
    )
