"""Samplers for gaussian (embedding) diffusion: DDPM (ancestral) and DDIM.

Both start from Gaussian noise z_1 [B, L, D] drawn from the generator (or given as `noise`),
walk a grid of `num_steps` times from 1 to 0, and return the argmax tokens [B, L] of the last
x0 estimate. Positions held fixed (a prompt) stay at their clean embedding with the clean flag
at every step and keep their tokens. Each step feeds the previous x0 estimate back to the
network (self-conditioning). Options:

- `eta` (DDIM): 0 is deterministic (no noise after z_1), 1 has DDPM's variance, in between mixes;
- `clamp`: snap each x0 estimate to the nearest token embedding before the update;
- `guidance_scale` (classifier-free): logits = uncond + scale * (cond - uncond), where the
  unconditional prediction sees the prompt's positions (`prompt`, bool [B, L]; default every
  fixed position) noised like the rest (no clean flag) and the null class instead of `labels`.

A text never ends inside its template: at a free position with a fixed token after it that is
not an end (an infilling template's given words; `masked.inside_the_text`), the end-of-text,
padding and start tokens are ruled out of the logits at every step, so neither the x0 estimate
(score interpolation) nor the argmax tokens hold them there. Canvases with no such position
sample exactly as without the rule.

The callback sees the argmax tokens of the current x0 estimate [B, L] after every step.
"""
from __future__ import annotations

import torch

from .common import Sampler, SamplerStats, check_canvas
from .guidance import mix_guidance
from .block_calls import forbid_ends, inside_the_text
from .masked import StepCallback
from .randomness import Generators, normal


def clamp_to_tokens(x0_hat: torch.Tensor, table: torch.Tensor, exclude: int | None = None) -> torch.Tensor:
    """The nearest row of `table` [V, D] to each vector of x0_hat [..., D] (every row has the same
    norm, so the nearest is the largest dot product); row `exclude` (the mask token) is never chosen.
    The dot products are float32 under autocast too: in bf16 near neighbours tie."""
    with torch.autocast(device_type=x0_hat.device.type, enabled=False):
        scores = x0_hat.to(table.dtype) @ table.t()
    if exclude is not None:
        scores[..., exclude] = float("-inf")
    return table[scores.argmax(-1)]


def vp_coefficients(schedule, t: float, s: float) -> tuple[float, float, float, float]:
    """(alpha_t, sigma_t, alpha_s, sigma_s) of a gaussian schedule at times t > s, as floats (float64 maths)."""
    ts = torch.tensor([t, s], dtype=torch.float64)
    a, sg = schedule.alpha(ts).tolist(), schedule.sigma(ts).tolist()
    return a[0], sg[0], a[1], sg[1]


def ddpm_update(z: torch.Tensor, x0_hat: torch.Tensor, coefficients: tuple[float, float, float, float],
                generator: Generators = None) -> torch.Tensor:
    """One ancestral step: z_s drawn from q(z_s | z_t = z, x0 = x0_hat); any shape [..., D].
    `coefficients`: (alpha_t, sigma_t, alpha_s, sigma_s), see `vp_coefficients`."""
    a_t, s_t, a_s, s_s = coefficients
    a_ts = a_t / a_s
    var_ts = max(s_t**2 - a_ts**2 * s_s**2, 0.0)  # variance of q(z_t | z_s)
    mean = (a_ts * s_s**2 / s_t**2) * z + (a_s * var_ts / s_t**2) * x0_hat
    std = (var_ts * s_s**2 / s_t**2) ** 0.5
    return mean + std * normal(z.shape, generator, device=z.device)


def ddim_update(z: torch.Tensor, x0_hat: torch.Tensor, coefficients: tuple[float, float, float, float],
                eta: float = 0.0, generator: Generators = None) -> torch.Tensor:
    """One DDIM step from z_t = z to z_s: alpha_s x0_hat + sqrt(sigma_s^2 - c^2) eps_hat + c noise,
    c = eta sqrt(sigma_s^2 / sigma_t^2 (1 - alpha_t^2 / alpha_s^2)); eta = 0 draws no noise."""
    a_t, s_t, a_s, s_s = coefficients
    eps_hat = (z - a_t * x0_hat) / s_t
    c = eta * max(s_s**2 / s_t**2 * (1.0 - a_t**2 / a_s**2), 0.0) ** 0.5
    out = a_s * x0_hat + max(s_s**2 - c**2, 0.0) ** 0.5 * eps_hat
    if eta > 0:
        out = out + c * normal(z.shape, generator, device=z.device)
    return out


class _GaussianSamplerBase(Sampler):
    """`confidence` (with a callback): the probability the current estimate gives its decoded
    token at each position, NaN at the fixed positions."""

    method_names = ("gaussian",)
    options: tuple[str, ...] = ("num_steps", "temperature", "guidance_scale", "clamp")
    prompt_guidance = True  # without labels, guidance contrasts the prompt with the prompt noised (`prompt`)

    def coefficients(self, t: float, s: float) -> tuple[float, float, float, float]:
        """alpha_t, sigma_t, alpha_s, sigma_s as floats (float64 maths)."""
        return vp_coefficients(self.method.schedule, t, s)

    def update(self, z: torch.Tensor, x0_hat: torch.Tensor, t: float, s: float, eta: float,
               generator: Generators) -> torch.Tensor:
        raise NotImplementedError

    def estimate(self, z: torch.Tensor, t: torch.Tensor, fixed: torch.Tensor, prev: tuple, labels, scale: float,
                 table: torch.Tensor, x0_fixed: torch.Tensor, uncond_noise: torch.Tensor | None,
                 temperature: float = 1.0, prompt: torch.Tensor | None = None, inside: torch.Tensor | None = None):
        """(log-probs [B, L, V], x0 estimate [B, L, D], x0 estimate of the unconditional branch or
        None) at time t [B], guided when `uncond_noise` is given. `temperature` scales the logits
        before score interpolation (below 1 the estimate leans towards the likeliest tokens;
        0 takes the likeliest token's embedding). `prompt` bool [B, L]: the fixed positions the
        unconditional branch sees noised (default: all of them). `inside` bool [B, L]: the free
        positions a given word follows, where no end-of-text, padding or start token may be."""
        m = self.method
        prompt = fixed if prompt is None else prompt
        special = m.special
        ends = (special.eos, special.pad, special.bos)
        inside = torch.zeros_like(fixed) if inside is None else inside
        if uncond_noise is None:
            logits = forbid_ends(m.network_logits(self.model, z, t, fixed, prev[0], labels, table), inside, ends, -1e9)
            return (*m.x0_estimate(_tempered(logits, temperature), table), None)
        alpha, sigma = m.schedule.alpha(t)[:, None, None], m.schedule.sigma(t)[:, None, None]
        z_uncond = torch.where(prompt[..., None], alpha * x0_fixed + sigma * uncond_noise, z)
        both_labels = None if labels is None else torch.cat([labels, torch.full_like(labels, self.model.null_class)])
        prev_both = None if prev[0] is None else torch.cat(prev)
        logits = m.network_logits(self.model, torch.cat([z, z_uncond]), t.repeat(2),
                                  torch.cat([fixed, fixed & ~prompt]), prev_both, both_labels, table)
        # Finite, like the mask token's -1e9: guidance subtracts the two branches' logits.
        logits = forbid_ends(logits, inside.repeat(2, 1), ends, -1e9)
        cond, uncond = logits.chunk(2)
        logp, x0_hat = m.x0_estimate(_tempered(mix_guidance(cond, uncond, scale), temperature), table)
        return logp, x0_hat, m.x0_estimate(_tempered(uncond, temperature), table)[1]

    @torch.no_grad()
    def sample(self, canvas: torch.Tensor, fixed: torch.Tensor | None = None, *, labels: torch.Tensor | None = None,
               guidance_scale: float = 1.0, num_steps: int = 64, eta: float = 0.0, clamp: bool = False,
               temperature: float = 1.0, generator: Generators = None, callback: StepCallback = None,
               noise: torch.Tensor | None = None, prompt: torch.Tensor | None = None) -> torch.Tensor:
        """canvas [B, L] (token ids at the fixed positions), fixed bool [B, L] -> tokens [B, L].
        `noise` [B, L, D]: the starting z_1 (default: drawn from `generator`). `prompt` bool
        [B, L]: what guidance hides from the unconditional branch (default: every fixed position)."""
        fixed = check_canvas(canvas, fixed)
        prompt = fixed if prompt is None else prompt
        m = self.method
        table = m.token_embeddings(self.model)  # [V, D]
        batch, length = canvas.shape
        shape = (batch, length, table.shape[1])
        if noise is None:
            noise = normal(shape, generator, device=canvas.device)
        elif tuple(noise.shape) != shape:
            raise ValueError(f"noise {tuple(noise.shape)} must have shape {shape}")
        x0_fixed = table[canvas.clamp(0, table.shape[0] - 1)]
        inside = inside_the_text(canvas, fixed, (m.special.eos, m.special.pad))  # no end before a given word
        z = torch.where(fixed[..., None], x0_fixed, noise.to(table.dtype))
        guided = guidance_scale != 1.0 and (labels is not None or bool(prompt.any()))
        uncond_noise = normal(shape, generator, device=canvas.device) if guided else None
        times = torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float64).tolist()
        prev: tuple = (None, None)
        tokens = canvas
        self.stats = SamplerStats()
        self.confidence = None  # set at each step while a callback watches
        for i in range(num_steps):
            t, s = times[i], times[i + 1]
            t_batch = torch.full((batch,), t, device=canvas.device)
            logp, x0_hat, x0_uncond = self.estimate(z, t_batch, fixed, prev, labels, guidance_scale, table,
                                                    x0_fixed, uncond_noise, temperature, prompt, inside)
            x0_hat = torch.where(fixed[..., None], x0_fixed, x0_hat)
            prev = (x0_hat, x0_uncond)
            if clamp:
                x0_hat = torch.where(fixed[..., None], x0_fixed, clamp_to_tokens(x0_hat, table, m.special.mask))
            z = torch.where(fixed[..., None], x0_fixed, self.update(z, x0_hat, t, s, eta, generator))
            tokens = torch.where(fixed, canvas, logp.argmax(-1))
            if callback:  # a live view: how sure the estimate is of each decoded token
                self.confidence = logp.float().amax(-1).exp().masked_fill(fixed, float("nan"))
            self.stats.steps += 1
            self.stats.network_calls += 1
            if callback:
                callback(i + 1, num_steps, tokens)
        return tokens


def _tempered(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """logits / temperature; temperature 0: a one-hot at the argmax (as log-probabilities)."""
    if temperature == 1.0:
        return logits
    if temperature <= 0:
        return torch.where(logits == logits.amax(-1, keepdim=True), 0.0, float("-inf"))
    return logits / temperature


class DDPMSampler(_GaussianSamplerBase):
    """Ancestral sampling: z_s drawn from the posterior q(z_s | z_t, x0 = x0_hat)."""

    name = "ddpm"

    def update(self, z, x0_hat, t, s, eta, generator):
        return ddpm_update(z, x0_hat, self.coefficients(t, s), generator)


class DDIMSampler(_GaussianSamplerBase):
    """DDIM: z_s = alpha_s x0_hat + sqrt(sigma_s^2 - c^2) eps_hat + c * noise, with
    c = eta * sqrt(sigma_s^2 / sigma_t^2 * (1 - alpha_t^2 / alpha_s^2)); eta = 0 draws no noise."""

    name = "ddim"
    options = (*_GaussianSamplerBase.options, "eta")

    def update(self, z, x0_hat, t, s, eta, generator):
        return ddim_update(z, x0_hat, self.coefficients(t, s), eta, generator)
