"""Gaussian diffusion over token embeddings in continuous time (Diffusion-LM / CDCD / Plaid style).

- Data: the clean sample x0 [B, L, D] is the embedding of each token, normalised and scaled to
  norm sqrt(D): x0 = sqrt(D) E[ids] / ||E[ids]||, with E the backbone's own input embedding
  table (trained with the model, or frozen with `method.freeze_embeddings`).
- Forward process (variance preserving): z_t = alpha(t) x0 + sigma(t) eps, alpha and sigma from
  a `GaussianSchedule` (log-SNR, clipped to [-10, 10] by default).
- Network: its input is [z_t, previous x0 estimate (self-conditioning; zeros when absent),
  clean-position flag] of width 2D + 1, projected to d_model by the backbone (`input_dim`); it
  is told t and predicts logits over the vocabulary. The x0 estimate is the probability-weighted
  mean of the (normalised) embeddings: score interpolation.
- Loss: cross-entropy of the logits plus `mse_weight` times the MSE of the x0 estimate, at the
  noised positions. Self-conditioning is used on half the training batches; a random prefix of
  each row is held clean with probability `prefix_prob` (prompts), the rest of the rows are
  noised everywhere (the unconditional model that classifier-free guidance needs).
- Likelihood: the continuous-time variational bound of VDM (Kingma et al. 2021), as in Plaid:
  diffusion term + reconstruction term -log p(ids | z_0) + prior term KL(q(z_1 | x0) || N(0, I)).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import MethodConfig
from ..errors import ConfigError, DlmsError
from ..schedules import GaussianSchedule, build_schedule, schedule_names
from .base import LossOutput, SpecialTokens, scored_positions, unwrap

DEFAULT_SCHEDULE = "logsnr-cosine"


def embedding_table(model) -> torch.Tensor:
    """The backbone's input embedding matrix [V, D]: `embed` (the built-in transformer) or
    `get_input_embeddings()` (Hugging Face models and wrappers)."""
    backbone = unwrap(model)
    embed = getattr(backbone, "embed", None)
    if isinstance(embed, torch.nn.Embedding):
        return embed.weight
    if hasattr(backbone, "get_input_embeddings"):
        return backbone.get_input_embeddings().weight
    raise TypeError(f"{type(backbone).__name__} exposes no input embeddings (`embed` or `get_input_embeddings()`)")


def _seeded_normal(u: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Standard normal noise [B, *shape] on the CPU, row b drawn from a generator seeded by the
    uniforms u[b] (its first 4 values): reproducible and independent of how rows are batched."""
    rows = []
    for values in (u[:, :4].double().cpu() * 2**24).long().tolist():
        seed = 0
        for v in values:
            seed = (seed * 16_777_259 + v) % (2**63 - 1)
        rows.append(torch.randn(shape, generator=torch.Generator().manual_seed(seed)))
    return torch.stack(rows)


class GaussianDiffusion:
    name = "gaussian"
    causal = False
    default_sampler = "ddim"
    stochastic_bound = True  # the likelihood is a Monte Carlo estimate of a bound
    supports_discrete_bound = False  # only the continuous-time bound
    needs_time = True  # resolve_run_config switches the backbone's time conditioning on
    t_min = 0.0  # the bound integrates t over all of [0, 1]
    self_condition_prob = 0.5

    def __init__(self, cfg: MethodConfig, special: SpecialTokens):
        self.cfg = cfg
        self.special = special
        self.schedule_name = DEFAULT_SCHEDULE if cfg.schedule == "auto" else cfg.schedule
        self.schedule = build_schedule(self.schedule_name)
        if not isinstance(self.schedule, GaussianSchedule):
            raise ConfigError(f"schedule '{self.schedule_name}' is not a gaussian schedule; the gaussian method "
                              f"needs one of: {', '.join(schedule_names('gaussian'))} (or auto)")

    # ------------------------------------------------------------------ backbone
    @staticmethod
    def input_width(embed_dim: int) -> int:
        """Width of the network input: [z_t (D), previous x0 estimate (D), clean flag (1)]."""
        return 2 * embed_dim + 1

    def prepare_backbone(self, model) -> None:
        """Before training (and before the optimizer and DDP see it): freeze the embeddings if asked."""
        if self.cfg.freeze_embeddings:
            embedding_table(model).requires_grad_(False)

    def token_embeddings(self, model) -> torch.Tensor:
        """The diffusion space: every token's embedding scaled to norm sqrt(D): [V, D] float32."""
        table = embedding_table(model).float()
        return table * (table.shape[1] ** 0.5 / table.norm(dim=-1, keepdim=True).clamp_min(1e-8))

    # ------------------------------------------------------------------ noise
    def sample_times(self, batch: int, device: torch.device, generator: torch.Generator | None = None) -> torch.Tensor:
        """t [B] in [0, 1); antithetic (stratified) across the batch when configured."""
        u = torch.rand(batch, device=device, generator=generator)
        if self.cfg.antithetic:
            u = (u[:1] + torch.arange(batch, device=device) / batch) % 1.0
        return u

    def corrupt(self, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor,
                clean: torch.Tensor | None = None) -> torch.Tensor:
        """q(z_t | x0): x0, eps [B, L, D], t [B] -> z_t [B, L, D]; `clean` bool [B, L] positions keep x0."""
        z = self.schedule.alpha(t)[:, None, None] * x0 + self.schedule.sigma(t)[:, None, None] * eps
        return z if clean is None else torch.where(clean[..., None], x0, z)

    def random_prefix(self, batch: int, length: int, device: torch.device) -> torch.Tensor:
        """bool [B, L]: with probability prefix_prob a row's first n positions, n uniform in
        [1, L // 2], are held clean (a prompt); other rows have none."""
        has = torch.rand(batch, device=device) < self.cfg.prefix_prob
        n = torch.randint(1, max(1, length // 2) + 1, (batch,), device=device) * has
        return torch.arange(length, device=device)[None, :] < n[:, None]

    # ------------------------------------------------------------------ network
    def network_logits(self, model, z: torch.Tensor, t: torch.Tensor, clean: torch.Tensor,
                       x0_prev: torch.Tensor | None, labels: torch.Tensor | None) -> torch.Tensor:
        """Logits [B, L, V] float32 (raw) for z [B, L, D] at t [B]; `clean` bool [B, L] flags the
        positions held clean; `x0_prev` [B, L, D] the previous estimate (None: zeros). At clean
        positions the previous estimate is the clean value itself."""
        prev = torch.zeros_like(z) if x0_prev is None else x0_prev.to(z.dtype)
        prev = torch.where(clean[..., None], z, prev)
        inputs = torch.cat([z, prev, clean[..., None].to(z.dtype)], dim=-1)
        return model(None, inputs_embeds=inputs, time=t, labels=labels).float()

    def x0_estimate(self, logits: torch.Tensor, table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Score interpolation: (log-probs [B, L, V] with the mask token excluded, x0 estimate
        [B, L, D] = sum_v p(v) table[v])."""
        logits = logits.clone()
        logits[..., self.special.mask] = float("-inf")
        logp = F.log_softmax(logits, dim=-1)
        return logp, logp.exp() @ table

    def denoise(self, model, z: torch.Tensor, t: torch.Tensor, clean: torch.Tensor, labels: torch.Tensor | None,
                table: torch.Tensor, self_condition: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(log-probs [B, L, V], x0 estimate [B, L, D]) of z_t; with `self_condition` a first pass
        (no gradient) gives the estimate the second pass sees. The first pass goes to the bare
        backbone, not through a DDP wrapper: ranks that drew different coins then still make the
        same collective calls."""
        prev = None
        if self_condition:
            with torch.no_grad():
                prev = self.x0_estimate(self.network_logits(unwrap(model), z, t, clean, None, labels), table)[1]
        return self.x0_estimate(self.network_logits(model, z, t, clean, prev, labels), table)

    # ------------------------------------------------------------------ training
    def loss(self, model, batch: dict) -> LossOutput:
        ids = batch["input_ids"]
        labels = batch.get("labels")
        batch_size, length = ids.shape
        table = self.token_embeddings(model)
        x0 = table[ids]  # [B, L, D]
        t = self.sample_times(batch_size, ids.device)
        clean = self.random_prefix(batch_size, length, ids.device)
        z = self.corrupt(x0, t, torch.randn_like(x0), clean)
        self_condition = bool(torch.rand(()) < self.self_condition_prob)
        logp, x0_hat = self.denoise(model, z, t, clean, labels, table, self_condition)
        noised = ~clean
        ce = F.nll_loss(logp[noised], ids[noised])
        mse = (x0_hat - x0).pow(2).mean(-1)[noised].mean()
        loss = ce + self.cfg.mse_weight * mse
        return LossOutput(loss, {"loss": loss.item(), "ce": ce.item(), "mse": mse.item()})

    # ------------------------------------------------------------------ likelihood
    def sequence_nll(self, model, x0_ids: torch.Tensor, labels: torch.Tensor | None = None,
                     t: torch.Tensor | None = None, u: torch.Tensor | None = None,
                     maskable: torch.Tensor | None = None, discrete_steps: int | None = None,
                     **_) -> torch.Tensor:
        """One Monte Carlo estimate of the continuous-time variational bound per sequence (nats):
        x0_ids [B, L] -> [B].

          diffusion       0.5 * (-d SNR/dt)(t) * sum_l ||x0_l - x0_hat_l(z_t, t)||^2, t ~ U[0, 1]
          reconstruction  -sum_l log p(ids_l | z_0), the network's own logits at t = 0
          prior           KL(N(alpha_1 x0, sigma_1^2 I) || N(0, I)), in closed form

        The log-SNR is clipped by construction (see schedules/gaussian.py): it is strictly
        decreasing on [0, 1], so no part of the integral is flat. `t` [B] is the diffusion time;
        `u` [B, L] uniforms (as evaluate_likelihood passes) seed each row's Gaussian noise, so
        the estimate is reproducible and independent of the batch; without `u` the noise comes
        from the global generator. With `maskable` bool [B, L] it bounds
        -log p(x[maskable] | x[~maskable]): the other positions are held clean, as a prompt.
        """
        if discrete_steps is not None:
            raise DlmsError("the gaussian method has only the continuous-time bound (no discrete_steps)")
        batch, length = x0_ids.shape
        device = x0_ids.device
        table = self.token_embeddings(model)
        x0 = table[x0_ids]
        dim = x0.shape[-1]
        if t is None:
            t = self.sample_times(batch, device)
        t = t.float()
        if u is None:
            eps = torch.randn((batch, 2, length, dim), device=device)
        else:
            eps = _seeded_normal(u, (2, length, dim)).to(device)
        clean = torch.zeros_like(x0_ids, dtype=torch.bool) if maskable is None else ~maskable.bool()
        zero = torch.zeros_like(t)
        # The diffusion term at t and the reconstruction term at t = 0 in one batch of 2B.
        z = torch.cat([self.corrupt(x0, t, eps[:, 0], clean), self.corrupt(x0, zero, eps[:, 1], clean)])
        both_labels = None if labels is None else labels.repeat(2)
        logp, x0_hat = self.denoise(model, z, torch.cat([t, zero]), clean.repeat(2, 1), both_labels, table)
        noised = (~clean).float()
        s = self.schedule
        lam = s.log_snr(t.double())
        snr_rate = (-s.log_snr_prime(t.double()) * lam.exp()).float()  # -d SNR / dt >= 0
        diffusion = 0.5 * snr_rate * ((x0 - x0_hat[:batch]).pow(2).sum(-1) * noised).sum(-1)
        token_logp = logp[batch:].gather(-1, x0_ids[..., None]).squeeze(-1)
        reconstruction = -(token_logp * noised).sum(-1)
        # Per position: 0.5 * (alpha_1^2 ||x0||^2 + D (sigma_1^2 - 1 - log sigma_1^2)), sigma^2 - 1 = -alpha^2.
        lam1 = s.log_snr(torch.ones(1, dtype=torch.float64, device=device))
        alpha1_sq = torch.sigmoid(lam1).float()
        log_sigma1_sq = F.logsigmoid(-lam1).float()
        kl = 0.5 * (alpha1_sq * (x0.pow(2).sum(-1) - dim) - dim * log_sigma1_sq)
        prior = (kl * noised).sum(-1)
        return diffusion + reconstruction + prior

    def scored_tokens(self, x0: torch.Tensor) -> torch.Tensor:
        """Tokens each sequence's likelihood is normalised by: x0 [B, L] -> [B]."""
        return scored_positions(x0, self.special).sum(-1)
