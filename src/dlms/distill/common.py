"""What both distillation objectives share: times on the student's grid and a KL to a target."""
from __future__ import annotations

import torch


def grid_times(batch: int, student_steps: int, device: torch.device) -> torch.Tensor:
    """t [B] drawn uniformly from the student's sampling grid {1/N, 2/N, ..., 1} (N = student_steps):
    the times at which a sampler of N steps (a grid from 1 down to 0) calls the network."""
    return torch.randint(1, student_steps + 1, (batch,), device=device).float() / student_steps


def kl_to_target(target_logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """KL(target || q) per row: [M, V] log-probs each -> [M] (float32). Entries where the target
    has no mass add nothing, even where both are -inf (the mask token)."""
    target_logp, logq = target_logp.float(), logq.float()
    p = target_logp.exp()
    diff = torch.where(p > 0, target_logp - logq, torch.zeros_like(logq))
    return (p * diff).sum(-1)
