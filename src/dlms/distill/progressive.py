"""Progressive distillation (Salimans & Ho 2022) for gaussian (embedding) diffusion.

A student of N sampling steps learns to do in one deterministic DDIM step (eta = 0) what its
teacher does in k (k = 2 when each round halves the steps). A training example: token ids from
the run's data, their clean vectors x0 (the method's token table), t on the student's grid
{1/N, ..., 1}, a random clean prefix as the method trains with (`random_prefix`), and
z_t = corrupt(x0, t). The teacher takes k DDIM steps of size dt/k from z_t to z_s, s = t - dt,
calling the network as the DDIM sampler does (positions held clean keep x0 and the clean flag;
each step is self-conditioned on the previous step's x0 estimate; the first on a fresh
estimate of its own, none at t = 1, where a sampler starts; no clamp, temperature 1).

Target, in x0-prediction form: the x0 that makes ONE student DDIM step from z_t land on z_s,
    x_tilde = (z_s - (sigma_s / sigma_t) z_t) / (alpha_s - sigma_s alpha_t / sigma_t).
Loss: the method's own loss form, cross-entropy + `mse_weight` x MSE at the noised positions,
with both targets taken from the teacher: the MSE of the student's x0 estimate to x_tilde (the
progressive-distillation term: where the student's step lands), and, for the token term, the
KL from the teacher's distribution at its last sub-step (whose argmax a sampler outputs at its
final step) to the student's. The student's token table must stay the teacher's (the diffusion
space), so `dlms distill` trains gaussian students with `method.freeze_embeddings` on.
"""
from __future__ import annotations

import torch

from ..methods import LossOutput
from ..methods.gaussian import float32_region
from .common import RoundObjective, grid_times, kl_to_target


def _coefficients(method, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha, sigma) [B, 1, 1] float32 of t [B], computed in float64."""
    sch = method.schedule
    t64 = t.double()
    return sch.alpha(t64).float()[:, None, None], sch.sigma(t64).float()[:, None, None]


def ddim_step(method, z: torch.Tensor, x0_hat: torch.Tensor, t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """The deterministic DDIM update (eta = 0) from z_t to z_s, per row: z [B, L, D], t, s [B]."""
    a_t, s_t = _coefficients(method, t)
    a_s, s_s = _coefficients(method, s)
    eps_hat = (z - a_t * x0_hat) / s_t
    return a_s * x0_hat + s_s * eps_hat


def ddim_target(method, z_t: torch.Tensor, z_s: torch.Tensor, t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """The x0 that takes one DDIM step (eta = 0) from z_t [B, L, D] at t [B] exactly to z_s at s [B]."""
    a_t, s_t = _coefficients(method, t)
    a_s, s_s = _coefficients(method, s)
    return (z_s - (s_s / s_t) * z_t) / (a_s - s_s * a_t / s_t)


def _first_estimate(method, model, z, t, clean, labels, table) -> torch.Tensor | None:
    """Self-conditioning input of a step at t [B] with no previous step: a fresh estimate (no
    gradient), zero in the rows at t = 1 (where a sampler starts with none)."""
    est = method.self_conditioning_estimate(model, z, t, clean, labels, table)
    return torch.where((t < 1.0)[:, None, None], est, torch.zeros_like(est))


@torch.no_grad()
def teacher_rollout(method, teacher, z: torch.Tensor, t: torch.Tensor, dt: float, clean: torch.Tensor,
                    x0_clean: torch.Tensor, labels: torch.Tensor | None, table: torch.Tensor,
                    substeps: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """(z_s [B, L, D] after `substeps` DDIM steps from z at t [B] to t - dt, the teacher's
    log-probs [B, L, V] at its last sub-step). `clean` bool [B, L]: positions held at x0_clean."""
    if substeps < 1:
        raise ValueError(f"substeps must be at least 1, got {substeps}")
    prev = _first_estimate(method, teacher, z, t, clean, labels, table)
    time = t
    logp = None
    for j in range(substeps):
        s = (t - dt * (j + 1) / substeps).clamp(min=0.0)
        logits = method.network_logits(teacher, z, time, clean, prev, labels, table)
        logp, x0_hat = method.x0_estimate(logits, table)
        x0_hat = torch.where(clean[..., None], x0_clean, x0_hat)
        prev = x0_hat
        with float32_region(z):
            z = torch.where(clean[..., None], x0_clean, ddim_step(method, z.float(), x0_hat.float(), time, s))
        time = s
    return z, logp


class ProgressiveObjective(RoundObjective):
    """The Trainer objective of one progressive-distillation round: `objective(student, batch)`."""

    name = "progressive"
    how = "progressive, DDIM"

    def __call__(self, model, batch: dict) -> LossOutput:
        m = self.method
        ids = batch["input_ids"]
        labels = batch.get("labels")
        batch_size, length = ids.shape
        dt = 1.0 / self.student_steps
        t = grid_times(batch_size, self.student_steps, ids.device)
        s = (t - dt).clamp(min=0.0)
        with torch.no_grad():
            teacher_table = m.token_embeddings(self.teacher)
        x0 = teacher_table[ids]  # [B, L, D]
        clean = m.random_prefix(batch_size, length, ids.device)
        z = m.corrupt(x0, t, torch.randn_like(x0), clean)
        z_s, teacher_logp = teacher_rollout(m, self.teacher, z, t, dt, clean, x0, labels, teacher_table,
                                            self.substeps)
        with float32_region(z):
            target = ddim_target(m, z.float(), z_s.float(), t, s)
        table = m.token_embeddings(model)  # the same vectors: the student's table is frozen
        prev = _first_estimate(m, model, z, t, clean, labels, table)
        logits = m.network_logits(model, z, t, clean, prev, labels, table)
        logq, x0_hat = m.x0_estimate(logits, table)
        noised = (~clean).float()
        count = noised.sum().clamp(min=1.0)
        kl = (kl_to_target(teacher_logp.flatten(0, 1), logq.flatten(0, 1)).view(batch_size, length)
              * noised).sum() / count
        mse = ((x0_hat - target).pow(2).mean(-1) * noised).sum() / count
        loss = kl + m.cfg.mse_weight * mse
        return LossOutput(loss, {"loss": loss.item(), "kl": kl.item(), "mse": mse.item()})
