"""What both distillation objectives share: their round (method, teacher, steps), times on the
student's grid and a KL to a target."""
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


class RoundObjective:
    """The Trainer objective of one distillation round, `objective(student, batch)`: one step of
    the student replaces `substeps` of the frozen `teacher`, so a sampler of `student_steps *
    substeps` steps becomes one of `student_steps`. A subclass names its loss in `how`."""

    name = ""
    how = ""  # shown in `description`, e.g. "progressive, DDIM"

    def __init__(self, method, teacher: torch.nn.Module, student_steps: int, substeps: int = 2):
        self.method = method
        self.teacher = teacher
        self.student_steps = student_steps
        self.substeps = substeps
        self.description = (f"distilling ({self.how}): one step of the student replaces {substeps} of the teacher; "
                            f"{student_steps * substeps} -> {student_steps} sampling steps")
