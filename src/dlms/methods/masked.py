"""Absorbing-state (masked) diffusion in continuous time, MDLM style.

Forward process: each token of x0 is replaced by the mask token with probability
1 - alpha(t). SUBS parameterisation: the network never predicts the mask token, and unmasked
tokens are carried through unchanged, so only masked positions carry a loss. The loss is the
continuous-time ELBO:  E_t [ w(t) * sum_{masked l} -log p(x0_l | x_t) ],  w(t) = -alpha'/(1-alpha).

Padding is data here: in a padded row the pad tokens after the end-of-text are masked and scored
like any token, so the model learns a text's length (the likelihood is still per non-pad token).
On prompt/response rows (methods/base.py) only the response region is masked and scored, its
end-of-text and padding included (LLaDA's supervised fine-tuning); the prompt stays clean, except
in the rows whose prompt is dropped (`train.prompt_drop_prob`): there it is all mask tokens, as a
sampler's unconditional branch shows it under guidance on the prompt (LLaDA's CFG), and unscored.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..method_options import BlockOptions, MaskedOptions
from ..schedules import MaskingSchedule, build_schedule, schedule_names
from .base import LossOutput, Method, SpecialTokens, dropped_prompts, response_mask, scored_positions, unwrap


class MaskedDiffusion(Method):
    name = "masked"
    options = MaskedOptions
    causal = False
    # Confidence-ordered, block by block (LLaDA): at the data's length it writes far better texts
    # than the exact reverse process (ancestral) at the same number of steps.
    default_sampler = "confidence"
    stochastic_bound = True  # the likelihood is a Monte Carlo estimate of a bound
    supports_discrete_bound = True  # sequence_nll(discrete_steps=T): the T-step bound
    trains_on_responses = True  # the prompt hook (methods/base.py): `maskable`, batch["prompt_len"]
    # Prompt dropout (methods/base.py): a dropped prompt is all mask tokens, as the samplers'
    # unconditional branch masks it under guidance on the prompt.
    drops_prompts = True

    def __init__(self, cfg: MaskedOptions | BlockOptions, special: SpecialTokens):
        super().__init__(cfg, special)
        self.schedule_name = "loglinear" if cfg.schedule == "auto" else cfg.schedule
        self.schedule = build_schedule(self.schedule_name)
        if not isinstance(self.schedule, MaskingSchedule):
            raise ConfigError(f"schedule '{self.schedule_name}' is not a masking schedule; the masked method "
                              f"needs one of: {', '.join(schedule_names('masking'))} (or auto)")
        # Smallest t: where the mask probability reaches eps (keeps the 1/t-like weight finite).
        self.t_min = self.schedule.time_of_mask_prob(cfg.eps)

    # ------------------------------------------------------------------ noise
    def sample_times(self, batch: int, device: torch.device, generator: torch.Generator | None = None) -> torch.Tensor:
        """t [B] in [t_min, 1]; antithetic (stratified) across the batch when configured."""
        u = torch.rand(batch, device=device, generator=generator)
        if self.cfg.antithetic:
            u = (u[:1] + torch.arange(batch, device=device) / batch) % 1.0
        return self.t_min + (1.0 - self.t_min) * u

    def corrupt(self, x0: torch.Tensor, t: torch.Tensor, u: torch.Tensor | None = None,
                maskable: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """q(x_t | x0): x0 [B, L], t [B] -> (x_t [B, L], masked bool [B, L]). `u` [B, L]: uniform
        noise; `maskable` bool [B, L]: only these positions are noised (the rest is held clean)."""
        if u is None:
            u = torch.rand(x0.shape, device=x0.device)
        masked = u < self.schedule.mask_prob(t)[:, None]
        if maskable is not None:
            masked &= maskable
        return torch.where(masked, torch.full_like(x0, self.special.mask), x0), masked

    # ------------------------------------------------------------------ network
    def masked_log_probs(self, model, xt: torch.Tensor, masked: torch.Tensor, t: torch.Tensor,
                         labels: torch.Tensor | None) -> torch.Tensor:
        """log p(x0 | x_t) at the masked positions only: [M, V] float32, mask token excluded (SUBS)."""
        time = t if unwrap(model).spec.time_conditioning else None
        # Only masked positions need the vocabulary projection: it is most of the head's cost.
        logits = model(xt, select=masked, time=time, labels=labels).float()
        logits[:, self.special.mask] = float("-inf")
        return F.log_softmax(logits, dim=-1)

    def sequence_nll(self, model, x0: torch.Tensor, labels: torch.Tensor | None = None,
                     t: torch.Tensor | None = None, u: torch.Tensor | None = None,
                     maskable: torch.Tensor | None = None, discrete_steps: int | None = None) -> torch.Tensor:
        """One Monte Carlo estimate of the ELBO per sequence (nats): x0 [B, L] -> [B].

        With `maskable` (bool [B, L]) it bounds -log p(x0[maskable] | x0[~maskable]): the other
        positions stay clean, as a prompt does at sampling. With `discrete_steps` T it estimates
        the T-step (discrete-time) ELBO instead; `t` must then lie on the grid i / T, i = 1..T.
        """
        if t is None:
            t = self.sample_times(x0.shape[0], x0.device)
        xt, masked = self.corrupt(x0, t, u, maskable)
        logp = self.masked_log_probs(model, xt, masked, t, labels)
        nll = -logp.gather(-1, x0[masked][:, None]).squeeze(-1)  # [M]
        # (1 - t_min): t is uniform on [t_min, 1], so this is an estimate of the integral over it.
        if discrete_steps is None:
            per_t = (1.0 - self.t_min) * self.schedule.elbo_weight(t)
        else:
            per_t = self.schedule.discrete_elbo_weight(t, discrete_steps)
        weight = per_t[:, None].expand_as(x0)[masked]
        per_seq = torch.zeros(x0.shape[0], device=x0.device, dtype=torch.float32)
        return per_seq.index_add_(0, masked.nonzero()[:, 0], weight * nll)

    def loss(self, model, batch: dict) -> LossOutput:
        """The bound per position of the batch (of the response region, for prompt/response rows)."""
        x0 = batch["input_ids"]
        maskable = response_mask(batch, x0)  # None: every position
        nll = self.sequence_nll(model, self.hide_dropped_prompts(batch, x0), batch.get("labels"), maskable=maskable)
        positions = x0.numel() if maskable is None else maskable.sum().clamp(min=1)
        loss = nll.sum() / positions
        tokens = scored_positions(x0, self.special, maskable).sum().clamp(min=1)
        return LossOutput(loss, {"loss": loss.item(), "nll_bound": (nll.sum() / tokens).item()})

    def hide_dropped_prompts(self, batch: dict, x0: torch.Tensor) -> torch.Tensor:
        """x0 [B, L] with the dropped prompts' positions (`dropped_prompts`) set to the mask token.
        They lie outside the response region, so they stay as they are (never scored): the network
        sees them masked, as the unconditional branch of guidance shows them at sampling."""
        hidden = dropped_prompts(batch, x0)
        return x0 if hidden is None else x0.masked_fill(hidden, self.special.mask)

    def scored_tokens(self, x0: torch.Tensor, maskable: torch.Tensor | None = None) -> torch.Tensor:
        """Tokens each sequence's likelihood is normalised by: x0 [B, L] -> [B] (with `maskable`
        bool [B, L], those inside it)."""
        return scored_positions(x0, self.special, maskable).sum(-1)
