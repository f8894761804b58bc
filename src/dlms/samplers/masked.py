"""Samplers for masked diffusion: ancestral, cached ancestral and confidence-ordered unmasking.

All three start from a canvas [B, L] whose free positions hold the mask token, never change
the positions held fixed (a prompt prefix or any given tokens), and return tokens [B, L].

Classifier-free guidance (`guidance_scale` != 1) contrasts the conditional prediction with an
unconditional one: with `labels`, the same input under the null class; without labels, the
input with the prompt's positions (`prompt`, bool [B, L]; default every fixed position) masked,
as LLaDA guides on a prompt. A masked model needs no extra training for the latter: a masked
prompt is just a noisier state of the same data.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from .common import check_canvas, filter_logits, sample_categorical
from .guidance import guided_logits, mix_guidance

# callback(step, num_steps, x_t [B, L]) is called after every step, e.g. to show the denoising.
StepCallback = Optional[Callable[[int, int, torch.Tensor], None]]


class _MaskedSamplerBase:
    method_names = ("masked",)
    # The sampling options `sample` takes (DiffusionLM passes exactly these; any other is an error).
    options: tuple[str, ...] = ("num_steps", "temperature", "top_k", "top_p", "guidance_scale")
    prompt_guidance = True  # without labels, guidance contrasts the prompt with the prompt masked (`prompt`)

    def __init__(self, method, model):
        self.method = method
        self.model = model
        self.mask_id = method.special.mask

    def denoiser_logits(self, xt: torch.Tensor, t: torch.Tensor, select: torch.Tensor,
                        labels: torch.Tensor | None, guidance_scale: float,
                        prompt: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of p(x0 | x_t) at the selected positions: [M, V] float32, mask token excluded;
        guided against the null class (with `labels`) or against x_t with `prompt` masked."""
        model = self.model
        time_conditioned = model.spec.time_conditioning
        if labels is None and guidance_scale != 1.0 and prompt is not None and bool(prompt.any()):
            both = torch.cat([xt, xt.masked_fill(prompt, self.mask_id)])
            out = model(both, select=select.repeat(2, 1), time=t.repeat(2) if time_conditioned else None)
            cond, uncond = out.float().chunk(2)
            logits = mix_guidance(cond, uncond, guidance_scale)
            logits[:, self.mask_id] = float("-inf")
            return logits

        def forward(lab: torch.Tensor | None) -> torch.Tensor:
            reps = 1 if lab is None else lab.shape[0] // xt.shape[0]
            return model(xt.repeat(reps, 1), select=select.repeat(reps, 1),
                         time=t.repeat(reps) if time_conditioned else None, labels=lab)

        logits = guided_logits(forward, labels, model.null_class, guidance_scale).float()
        logits[:, self.mask_id] = float("-inf")
        return logits

    @staticmethod
    def time_grid(num_steps: int, device: torch.device) -> torch.Tensor:
        """num_steps + 1 times from 1 down to 0."""
        return torch.linspace(1.0, 0.0, num_steps + 1, device=device)


class AncestralSampler(_MaskedSamplerBase):
    """The reverse process of the forward masking: from t to s, each masked token is revealed
    with probability (alpha_s - alpha_t) / (1 - alpha_t), its value drawn from p(x0 | x_t)."""

    name = "ancestral"
    use_cache = False

    @torch.no_grad()
    def sample(self, canvas: torch.Tensor, fixed: torch.Tensor | None = None, *, labels: torch.Tensor | None = None,
               guidance_scale: float = 1.0, num_steps: int = 64, temperature: float = 1.0, top_k: int = 0,
               top_p: float = 1.0, generator: torch.Generator | None = None,
               callback: StepCallback = None, prompt: torch.Tensor | None = None) -> torch.Tensor:
        fixed = check_canvas(canvas, fixed)
        prompt = fixed if prompt is None else prompt
        x = torch.where(fixed, canvas, torch.full_like(canvas, self.mask_id))
        schedule = self.method.schedule
        times = self.time_grid(num_steps, x.device)
        cached: list[torch.Tensor | None] = [None] * x.shape[0]  # per row: logits at its masked positions
        for i in range(num_steps):
            t, s = times[i], times[i + 1]
            masked = x == self.mask_id
            if not masked.any():
                if callback:
                    callback(i + 1, num_steps, x)
                continue
            alpha_t, alpha_s = schedule.alpha(t), schedule.alpha(s)
            reveal_prob = 1.0 if i == num_steps - 1 else float((alpha_s - alpha_t) / (1.0 - alpha_t))
            # Which masked tokens are revealed this step is decided first, so that the vocabulary
            # projection and the sampling run only where a token is revealed.
            u = torch.rand(int(masked.sum()), dtype=torch.float64, device=x.device, generator=generator)
            reveal_among_masked = u < reveal_prob  # [M]
            if not reveal_among_masked.any():
                if callback:
                    callback(i + 1, num_steps, x)
                continue
            reveal = torch.zeros_like(masked)
            reveal[masked] = reveal_among_masked
            if self.use_cache:
                logits = self._row_logits(x, masked, t, labels, guidance_scale, cached, prompt)[reveal_among_masked]
            else:
                logits = self.denoiser_logits(x, t.expand(x.shape[0]), reveal, labels, guidance_scale, prompt)
            proposal = sample_categorical(filter_logits(logits, top_k, top_p), temperature, generator)  # [R]
            x_next = x.clone()
            x_next[reveal] = proposal
            if self.use_cache:
                changed = (x_next != x).any(-1)
                for row in changed.nonzero()[:, 0].tolist():
                    cached[row] = None
            x = x_next
            if callback:
                callback(i + 1, num_steps, x)
        return x

    def _row_logits(self, x, masked, t, labels, guidance_scale, cached, prompt) -> torch.Tensor:
        """Logits [M, V] at every masked position; rows whose tokens did not change since the
        last network call reuse that call's output."""
        batch = x.shape[0]
        t_b = t.expand(batch)
        stale = [r for r in range(batch) if cached[r] is None]
        if stale:
            rows = torch.tensor(stale, device=x.device)
            fresh = self.denoiser_logits(x[rows], t_b[rows], masked[rows], None if labels is None else labels[rows],
                                         guidance_scale, prompt[rows])
            counts = masked[rows].sum(-1).tolist()
            for r, part in zip(stale, fresh.split(counts)):
                cached[r] = part
        return torch.cat([cached[r] for r in range(batch)])


class CachedAncestralSampler(AncestralSampler):
    """Ancestral sampling that skips the network for rows in which no token changed.

    Exact for models without time conditioning (their output depends on x_t only); for
    time-conditioned models it reuses a slightly older time's prediction.
    """

    name = "cached"
    use_cache = True


class ConfidenceSampler(_MaskedSamplerBase):
    """Confidence-ordered unmasking (MaskGIT / LLaDA): each step predicts every masked token
    and keeps the most confident ones, a fixed number per step; the rest stay masked."""

    name = "confidence"
    options = (*_MaskedSamplerBase.options, "tokens_per_step")

    @torch.no_grad()
    def sample(self, canvas: torch.Tensor, fixed: torch.Tensor | None = None, *, labels: torch.Tensor | None = None,
               guidance_scale: float = 1.0, num_steps: int = 64, temperature: float = 1.0, top_k: int = 0,
               top_p: float = 1.0, tokens_per_step: int | None = None, generator: torch.Generator | None = None,
               callback: StepCallback = None, prompt: torch.Tensor | None = None) -> torch.Tensor:
        fixed = check_canvas(canvas, fixed)
        prompt = fixed if prompt is None else prompt
        x = torch.where(fixed, canvas, torch.full_like(canvas, self.mask_id))
        free = int((~fixed).sum(-1).max())
        if tokens_per_step:
            num_steps = max(1, math.ceil(free / tokens_per_step))
        times = self.time_grid(num_steps, x.device)
        for i in range(num_steps):
            masked = x == self.mask_id
            remaining = masked.sum(-1)  # [B]
            if not masked.any():
                if callback:
                    callback(i + 1, num_steps, x)
                continue
            steps_left = num_steps - i
            # An even share of what is left: every row finishes exactly at the last step.
            if tokens_per_step:
                quota = remaining.clamp(max=tokens_per_step)
            else:
                quota = torch.div(remaining + steps_left - 1, steps_left, rounding_mode="floor")
            logits = filter_logits(self.denoiser_logits(x, times[i].expand(x.shape[0]), masked, labels,
                                                        guidance_scale, prompt), top_k, top_p)
            proposal = sample_categorical(logits, temperature, generator)  # [M]
            confidence = torch.full(x.shape, float("-inf"), device=x.device)
            confidence[masked] = logits.log_softmax(-1).gather(-1, proposal[:, None]).squeeze(-1)
            order = confidence.argsort(dim=-1, descending=True)
            rank = torch.empty_like(order).scatter_(-1, order, torch.arange(x.shape[1], device=x.device).expand_as(order))
            keep = masked & (rank < quota[:, None])
            candidate = torch.full_like(x, self.mask_id)
            candidate[masked] = proposal
            x = torch.where(keep, candidate, x)
            if callback:
                callback(i + 1, num_steps, x)
        return x
