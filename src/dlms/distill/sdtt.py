"""Self-distillation through time (SDTT, Deschenaux & Gulcehre 2024) for masked diffusion.

A student of N sampling steps learns to do in one ancestral step what its teacher does in k
(k = 2 when each round halves the steps). A training example: x0 from the run's data, t on the
student's grid {1/N, ..., 1}, x_t = corrupt(x0, t). The teacher walks k ancestral steps of
size dt/k from x_t (t -> t - dt/k -> ... -> t - dt, dt = 1/N), the masked method's update:
each masked token is revealed with probability (alpha_s - alpha_t) / (1 - alpha_t) (1 at the
final step, s = 0, as the ancestral sampler does), its value drawn from p(x0 | x_current).

Targets, per position masked in x_t:
- revealed in sub-step j: the teacher's log p(x0 | state before sub-step j), the distribution
  its value was drawn from;
- still masked after the k sub-steps: with `still_masked="last"` (the default) the teacher's
  last sub-step distribution (its best-informed guess), with "exclude" no target.
The student, in ONE forward at x_t, minimises KL(teacher || student) at the targeted
positions (SDTT's best objective), averaged over them. Only reveal decisions and the values
revealed before the last sub-step are drawn: the last sub-step's values change no target.
"""
from __future__ import annotations

from typing import Literal

import torch

from ..methods import LossOutput
from .common import RoundObjective, grid_times, kl_to_target

StillMasked = Literal["last", "exclude"]


@torch.no_grad()
def sdtt_targets(method, teacher, xt: torch.Tensor, t: torch.Tensor, dt: float, labels: torch.Tensor | None = None,
                 substeps: int = 2, still_masked: StillMasked = "last") -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's targets at the masked positions of x_t: (log-probs [M, V] float32, targeted
    bool [M]), M = (x_t == mask).sum() in row-major order, as `method.masked_log_probs` orders
    them. xt [B, L], t [B]: the student's time; the teacher walks `substeps` steps to t - dt."""
    if still_masked not in ("last", "exclude"):
        raise ValueError(f"still_masked must be 'last' or 'exclude', got {still_masked!r}")
    mask = method.special.mask
    schedule = method.schedule
    x = xt.clone()
    masked0 = xt == mask
    rows = masked0.nonzero()[:, 0]  # [M] the batch row of each masked position
    pending = torch.ones(rows.shape[0], dtype=torch.bool, device=xt.device)  # still masked, [M]
    targeted = torch.zeros_like(pending)
    target = torch.zeros(rows.shape[0], method.special.vocab_size, device=xt.device)
    if substeps < 1:
        raise ValueError(f"substeps must be at least 1, got {substeps}")
    time = t
    for j in range(substeps):
        s = (t - dt * (j + 1) / substeps).clamp(min=0.0)
        index = pending.nonzero()[:, 0]  # [P] positions in masked0 order
        if index.numel() == 0:
            break
        current = x == mask  # the pending positions, in the same row-major order
        logp = method.masked_log_probs(teacher, x, current, time, labels)  # [P, V]
        alpha_t, alpha_s = schedule.alpha(time), schedule.alpha(s)
        prob = torch.where(s <= 0, torch.ones_like(alpha_t), (alpha_s - alpha_t) / (1.0 - alpha_t).clamp_min(1e-12))
        reveal = torch.rand(index.shape[0], device=xt.device) < prob[rows[index]]
        last = j == substeps - 1
        chosen = torch.ones_like(reveal) if last and still_masked == "last" else reveal
        target[index[chosen]] = logp[chosen]
        targeted[index[chosen]] = True
        if not last:
            values = torch.full((index.shape[0],), mask, dtype=x.dtype, device=x.device)
            if bool(reveal.any()):
                values[reveal] = torch.multinomial(logp[reveal].exp(), 1).squeeze(-1).to(x.dtype)
            x[current] = values
        pending[index[reveal]] = False
        time = s
    return target, targeted


class SDTTObjective(RoundObjective):
    """The Trainer objective of one SDTT round: `objective(student, batch) -> LossOutput`."""

    name = "sdtt"
    how = "SDTT, KL"

    def __init__(self, method, teacher: torch.nn.Module, student_steps: int, substeps: int = 2,
                 still_masked: StillMasked = "last"):
        super().__init__(method, teacher, student_steps, substeps)
        self.still_masked = still_masked

    def __call__(self, model, batch: dict) -> LossOutput:
        m = self.method
        x0 = batch["input_ids"]
        labels = batch.get("labels")
        t = grid_times(x0.shape[0], self.student_steps, x0.device)
        xt, masked = m.corrupt(x0, t)
        target, targeted = sdtt_targets(m, self.teacher, xt, t, 1.0 / self.student_steps, labels, self.substeps,
                                        self.still_masked)
        logq = m.masked_log_probs(model, xt, masked, t, labels)  # [M, V], the student's one step
        kl = kl_to_target(target, logq)
        weight = targeted.float()
        loss = (kl * weight).sum() / weight.sum().clamp(min=1.0)
        return LossOutput(loss, {"loss": loss.item(), "kl": loss.item(), "targets": float(weight.sum().item())})
