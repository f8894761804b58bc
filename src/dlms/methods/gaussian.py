"""Gaussian diffusion over token embeddings in continuous time (Diffusion-LM / CDCD / Plaid style).

- Data: the clean sample x0 [B, L, D] is the vector of each token, normalised to the fixed norm
  r = `method.embedding_norm` (default 1): x0 = r E[ids] / ||E[ids]||. E is a token table of
  its own, D = `method.embed_dim` wide (16 by default on the built-in transformer, as in
  Plaid: noising, score interpolation and the likelihood logits then cost little), or with
  embed_dim 0 the backbone's own input embeddings (the default for a pretrained backbone);
  trained with the model, or frozen with `method.freeze_embeddings`. Two tokens are told apart
  once SNR * r^2 is large enough, so with a fixed r the noise levels that matter sit in the
  middle of the schedule whatever D is (with norm sqrt(D) they would move to log-SNR ~ -log D,
  and most training and sampling time would go where the tokens are already obvious).
- Forward process (variance preserving): z_t = alpha(t) x0 + sigma(t) eps, alpha and sigma from
  a `GaussianSchedule` (log-SNR from `method.logsnr_max` = 10 at t = 0 to `logsnr_min` = -10).
- Network: its input is [z_t, previous x0 estimate (self-conditioning; zeros when absent),
  clean-position flag] of width 2D + 1, projected to d_model by the backbone (`input_dim`).
  z_t and the estimate are scaled to unit variance per coordinate first (z_t by
  1 / sqrt(alpha^2 r^2 / D + sigma^2), the EDM "c_in"), so the network sees inputs of one scale
  at every noise level. It is told t and predicts logits over the vocabulary, to which the
  likelihood of z_t under each token is added at high SNR (`likelihood_logits`). The x0
  estimate is the probability-weighted mean of the token vectors: score interpolation.
- Loss: cross-entropy of the logits plus `mse_weight` times the MSE of the x0 estimate, at the
  noised positions. Self-conditioning is used on half the training batches; a random prefix of
  each row is held clean with probability `prefix_prob` (prompts), the rest of the rows are
  noised everywhere (the unconditional model that classifier-free guidance needs). On
  prompt/response rows (methods/base.py) the prompt is that clean prefix in every row, and only
  the response region (its end-of-text and padding included) is noised and scored; a dropped
  prompt (`train.prompt_drop_prob`) is noised at the row's t like the response, without the
  clean flag, and still not scored: what the samplers' unconditional branch feeds the network
  under guidance on the prompt (samplers/gaussian.py `estimate`).
- Likelihood: the continuous-time variational bound of VDM (Kingma et al. 2021), as in Plaid:
  diffusion term + reconstruction term -log p(ids | z_0) + prior term KL(q(z_1 | x0) || N(0, I)).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import ConfigError, DlmsError
from ..method_options import GaussianOptions
from ..schedules import SCHEDULES, GaussianSchedule, build_schedule, schedule_names
from .base import LossOutput, Method, SpecialTokens, dropped_prompts, response_mask, scored_positions, unwrap
from .score_interpolation import at_least_float32, interpolate_with_nll

DEFAULT_SCHEDULE = "logsnr-cosine"


DEFAULT_TABLE_DIM = 16  # the built-in transformer's own diffusion space (Plaid's width)
GATE_LOGSNR = 5.0  # where the likelihood logits take over (for unit-norm token vectors)
MASK_LOGIT = -1e9  # the mask token is never a clean token


def embedding_table(model) -> torch.Tensor:
    """The token vectors [V, D] that span the diffusion space: the backbone's separate
    `token_table` when it has one (method.embed_dim > 0), else its input embedding matrix:
    `embed` (the built-in transformer) or `get_input_embeddings()` (Hugging Face models)."""
    backbone = unwrap(model)
    table = getattr(backbone, "token_table", None)
    if isinstance(table, torch.nn.Embedding):
        return table.weight
    embed = getattr(backbone, "embed", None)
    if isinstance(embed, torch.nn.Embedding):
        return embed.weight
    if hasattr(backbone, "get_input_embeddings"):
        return backbone.get_input_embeddings().weight
    raise TypeError(f"{type(backbone).__name__} exposes no input embeddings (`embed` or `get_input_embeddings()`)")


def float32_region(x: torch.Tensor):
    """Autocast off on `x`'s device: what runs inside keeps its inputs' dtype (float32 here).

    Under bf16 autocast a matrix product with the token table comes out in bf16: the x0
    estimate is then off by ~2e-3 per coordinate, which the bound's SNR weight (up to ~1e5
    near t = 0) turns into nats, and the likelihood logits (hundreds of nats near t = 0) lose
    whole nats. So these products run in float32, like training's `interpolate_with_nll`."""
    return torch.autocast(device_type=x.device.type, enabled=False)


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


class GaussianDiffusion(Method):
    name = "gaussian"
    options = GaussianOptions
    causal = False
    default_sampler = "ddim"
    extends_past_training_length = False  # samples at most as long as the training rows
    stochastic_bound = True  # the likelihood is a Monte Carlo estimate of a bound
    supports_discrete_bound = False  # only the continuous-time bound
    needs_time = True  # resolve_run_config switches the backbone's time conditioning on
    reads_vectors = True  # [z_t, previous x0 estimate, clean flag]: `input_width`
    trains_on_responses = True  # the prompt hook (methods/base.py): `maskable`, batch["prompt_len"]
    drops_prompts = True  # prompt dropout (methods/base.py): a dropped prompt is noised, as guidance's uncond branch
    t_min = 0.0  # the bound integrates t over all of [0, 1]
    self_condition_prob = 0.5

    def __init__(self, cfg: GaussianOptions, special: SpecialTokens):
        super().__init__(cfg, special)
        self.schedule_name = DEFAULT_SCHEDULE if cfg.schedule == "auto" else cfg.schedule
        if not issubclass(SCHEDULES.get(self.schedule_name), GaussianSchedule):
            raise ConfigError(f"schedule '{self.schedule_name}' is not a gaussian schedule; the gaussian method "
                              f"needs one of: {', '.join(schedule_names('gaussian'))} (or auto)")
        if not cfg.logsnr_min < cfg.logsnr_max:
            raise ConfigError(f"method.logsnr_min ({cfg.logsnr_min}) must be below method.logsnr_max "
                              f"({cfg.logsnr_max}); e.g. -10 and 10")
        self.schedule = build_schedule(self.schedule_name, logsnr_min=cfg.logsnr_min, logsnr_max=cfg.logsnr_max)
        # Tokens are told apart once SNR * r^2 is large: the gate opens at log-SNR 5 for r = 1.
        self.gate_logsnr = GATE_LOGSNR - 2.0 * math.log(cfg.embedding_norm)

    # ------------------------------------------------------------------ backbone
    def table_dim(self, pretrained: bool) -> int:
        """Width of the method's own token table; 0: use the backbone's input embeddings."""
        if self.cfg.embed_dim is not None:
            return int(self.cfg.embed_dim)
        return 0 if pretrained else DEFAULT_TABLE_DIM

    def input_width(self, embed_dim: int) -> int:
        """Width of the network input: [z_t (D), previous x0 estimate (D), clean flag (1)]."""
        return 2 * embed_dim + 1

    def prepare_backbone(self, backbone) -> None:
        """Before training (and before the optimizer and DDP see it): freeze the embeddings if asked."""
        if self.cfg.freeze_embeddings:
            embedding_table(backbone).requires_grad_(False)

    def token_embeddings(self, model) -> torch.Tensor:
        """The diffusion space: every token's embedding scaled to norm `embedding_norm`: [V, D] float32."""
        table = embedding_table(model).float()
        return table * (self.cfg.embedding_norm / table.norm(dim=-1, keepdim=True).clamp_min(1e-8))

    def input_scales(self, t: torch.Tensor, dim: int) -> tuple[torch.Tensor, float]:
        """(c_in [B] for z_t at t [B], the scale of a clean vector): both bring a coordinate to unit variance."""
        per_coord = self.cfg.embedding_norm**2 / dim  # variance of one coordinate of x0
        alpha, sigma = self.schedule.alpha(t.float()), self.schedule.sigma(t.float())
        return (alpha**2 * per_coord + sigma**2).rsqrt(), per_coord**-0.5

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
                       x0_prev: torch.Tensor | None, labels: torch.Tensor | None,
                       table: torch.Tensor) -> torch.Tensor:
        """Logits [B, L, V] float32 for z [B, L, D] at t [B]: the network's plus the likelihood
        of z_t under each token (`likelihood_logits`), the mask token's pushed to -1e9 (finite,
        so guidance can subtract two sets of logits); `clean` bool [B, L] flags the positions
        held clean; `x0_prev` [B, L, D] the previous estimate (None: zeros), replaced by the
        clean value at clean positions; `table` [V, D] the token vectors."""
        c_in, unit = self.input_scales(t, z.shape[-1])
        clean_in = z * unit
        z_in = torch.where(clean[..., None], clean_in, z * c_in.to(z.dtype)[:, None, None])
        prev = torch.zeros_like(z) if x0_prev is None else x0_prev.to(z.dtype) * unit
        prev = torch.where(clean[..., None], clean_in, prev)
        inputs = torch.cat([z_in, prev, clean[..., None].to(z.dtype)], dim=-1)
        logits = model(None, inputs_embeds=inputs, time=t, labels=labels).float()
        return logits + self.likelihood_logits(z, t, clean, table, exclude_mask=True)

    def likelihood_logits(self, z: torch.Tensor, t: torch.Tensor, clean: torch.Tensor,
                          table: torch.Tensor, exclude_mask: bool = False) -> torch.Tensor:
        """log q(z_t | x0 = token v) up to a constant in v, gated to high SNR:
        g(t) (alpha / sigma^2) <z_t, e_v>, [B, L, V] (every e_v has the same norm, so the quadratic
        term is the same for all v); zero at clean positions. Float32 under autocast too
        (`float32_region`): near t = 0 these logits reach hundreds of nats.

        Added to the network's logits (Plaid's "output prior"), so near t = 0 the posterior
        sharpens as fast as the SNR grows: the diffusion term of the bound stays finite and the
        token vectors are pushed apart (without it, vectors of words used alike collapse onto
        each other). The gate g = sigmoid(log-SNR - gate_logsnr) keeps it out of the noise
        levels where tokens are still being decided: there a network that also reads z_t would
        count the same noisy evidence twice, and samples turn into word salad. `exclude_mask`
        adds -1e9 to the mask token's column in the same matrix product (one pass over [B, L, V]
        fewer: on a CPU those passes cost as much as the matrix products)."""
        lam = self.schedule.log_snr(t.float())
        alpha, sigma = self.schedule.alpha(t.float()), self.schedule.sigma(t.float())
        gate = torch.sigmoid(lam - self.gate_logsnr)
        weight = (gate * alpha / sigma.pow(2).clamp_min(1e-12))[:, None, None] * (~clean)[..., None]
        table = at_least_float32(table)
        bias = None
        if exclude_mask:
            bias = torch.zeros(table.shape[0], dtype=table.dtype, device=table.device)
            bias[self.special.mask] = MASK_LOGIT
        with float32_region(z):
            return F.linear(z.to(table.dtype) * weight.to(table.dtype), table, bias)

    def x0_estimate(self, logits: torch.Tensor, table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Score interpolation: (log-probs [B, L, V], x0 estimate [B, L, D] = sum_v p(v) table[v])
        of logits from `network_logits` (which already rule out the mask token); float32 under autocast too."""
        logp = F.log_softmax(at_least_float32(logits), dim=-1)
        with float32_region(logp):
            return logp, logp.exp() @ table.to(logp.dtype)

    def self_conditioning_estimate(self, model, z: torch.Tensor, t: torch.Tensor, clean: torch.Tensor,
                                   labels: torch.Tensor | None, table: torch.Tensor) -> torch.Tensor:
        """The first pass of self-conditioning: the x0 estimate [B, L, D] of z_t with no previous
        one, without gradient. It goes to the bare backbone, not through a DDP wrapper: ranks that
        drew different coins then still make the same collective calls."""
        with torch.no_grad():
            logits = self.network_logits(unwrap(model), z, t, clean, None, labels, table)
            with float32_region(logits):
                return F.softmax(logits, dim=-1) @ table.to(logits.dtype)

    def denoise(self, model, z: torch.Tensor, t: torch.Tensor, clean: torch.Tensor, labels: torch.Tensor | None,
                table: torch.Tensor, self_condition: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(log-probs [B, L, V], x0 estimate [B, L, D]) of z_t; with `self_condition` a first pass
        gives the estimate the second pass sees."""
        prev = self.self_conditioning_estimate(model, z, t, clean, labels, table) if self_condition else None
        return self.x0_estimate(self.network_logits(model, z, t, clean, prev, labels, table), table)

    # ------------------------------------------------------------------ training
    def loss(self, model, batch: dict) -> LossOutput:
        ids = batch["input_ids"]
        labels = batch.get("labels")
        table = self.token_embeddings(model)
        x0 = table[ids]  # [B, L, D]
        t = self.sample_times(ids.shape[0], ids.device)
        clean, scored = self.training_regions(batch, ids)
        z = self.corrupt(x0, t, torch.randn_like(x0), clean)
        self_condition = bool(torch.rand(()) < self.self_condition_prob)
        prev = self.self_conditioning_estimate(model, z, t, clean, labels, table) if self_condition else None
        logits = self.network_logits(model, z, t, clean, prev, labels, table)
        x0_hat, nll = interpolate_with_nll(logits, table, ids)  # = x0_estimate + gather, fewer passes
        weight = scored.float()
        count = weight.sum().clamp(min=1)
        ce = (nll * weight).sum() / count
        mse = ((x0_hat - x0).pow(2).mean(-1) * weight).sum() / count
        loss = ce + self.cfg.mse_weight * mse
        return LossOutput(loss, {"loss": loss.item(), "ce": ce.item(), "mse": mse.item()})

    def training_regions(self, batch: dict, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(clean, scored), both bool [B, L] for rows ids [B, L]: the positions held clean (with the
        clean flag) and those the loss counts. Plain text: a random prefix clean, the rest scored.
        Prompt/response rows: the prompt clean and the response scored, except a dropped prompt
        (`dropped_prompts`), which is noised like the response (as the unconditional branch of
        guidance on the prompt sees it: `fixed & ~prompt` clean) and still not scored."""
        response = response_mask(batch, ids)
        if response is None:
            clean = self.random_prefix(*ids.shape, ids.device)
            return clean, ~clean
        hidden = dropped_prompts(batch, ids)
        return (~response if hidden is None else ~response & ~hidden), response

    # ------------------------------------------------------------------ likelihood
    def sequence_nll(self, model, x0_ids: torch.Tensor, labels: torch.Tensor | None = None,
                     t: torch.Tensor | None = None, u: torch.Tensor | None = None,
                     maskable: torch.Tensor | None = None, discrete_steps: int | None = None) -> torch.Tensor:
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

    def scored_tokens(self, x0: torch.Tensor, maskable: torch.Tensor | None = None) -> torch.Tensor:
        """Tokens each sequence's likelihood is normalised by: x0 [B, L] -> [B] (with `maskable`
        bool [B, L], those inside it)."""
        return scored_positions(x0, self.special, maskable).sum(-1)
