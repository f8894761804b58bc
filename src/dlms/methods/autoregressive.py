"""The autoregressive baseline: next-token prediction on the same (causal) backbone, exact NLL.

Pads after the end-of-text are not modelled. On prompt/response rows (methods/base.py) only the
response's tokens and its end-of-text are scored: the exact -log p(response | prompt).

No prompt dropout (`train.prompt_drop_prob` is a ConfigError for this method, `drops_prompts`):
its sampler guides on labels only. A left-to-right model has no token that means "hidden" (its
inputs never hold the mask token; pads in place of the prompt would be a row it never otherwise
sees, and the response would still start where the prompt's length puts it), so guidance on the
prompt means dropping the prompt from the row: the unconditional branch is then a sequence of
another length, with its own cache and positions, which the AR sampler does not run. Training the
branch no sampler uses would only cost conditional quality.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import MethodConfig
from .base import LossOutput, SpecialTokens, response_mask


class Autoregressive:
    name = "ar"
    causal = True
    default_sampler = "ar"
    extends_past_training_length = False  # samples at most as long as the training rows
    stochastic_bound = False  # the likelihood is exact
    trains_on_responses = True  # the prompt hook (methods/base.py): `maskable`, batch["prompt_len"]
    drops_prompts = False  # no guidance on the prompt (see above): train.prompt_drop_prob is refused

    def __init__(self, cfg: MethodConfig, special: SpecialTokens):
        self.cfg = cfg
        self.special = special

    def _targets(self, x0: torch.Tensor, maskable: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Targets x0[:, 1:] and which of them count: pads after the end of text are not modelled,
        and with `maskable` bool [B, L] only the targets inside it are."""
        targets = x0[:, 1:]
        keep = targets != self.special.pad
        return targets, keep if maskable is None else keep & maskable[:, 1:]

    def sequence_nll(self, model, x0: torch.Tensor, labels: torch.Tensor | None = None, *,
                     maskable: torch.Tensor | None = None) -> torch.Tensor:
        """Exact -log p(x0[1:] | x0[0]) per sequence (nats): x0 [B, L] -> [B]. With `maskable`
        (bool [B, L], a suffix of each row) -log p(x0[maskable] | x0[~maskable])."""
        logits = model(x0[:, :-1], labels=labels).float()
        targets, keep = self._targets(x0, maskable)
        # Flattened rows: cross_entropy on a transposed [B, V, L] view is markedly slower.
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                              reduction="none").view_as(targets)  # [B, L-1]
        return (nll * keep).sum(-1)

    def loss(self, model, batch: dict) -> LossOutput:
        x0 = batch["input_ids"]
        maskable = response_mask(batch, x0)  # None: every position
        nll = self.sequence_nll(model, x0, batch.get("labels"), maskable=maskable)
        tokens = self.scored_tokens(x0, maskable).sum().clamp(min=1)
        loss = nll.sum() / tokens
        return LossOutput(loss, {"loss": loss.item(), "nll": loss.item()})

    def scored_tokens(self, x0: torch.Tensor, maskable: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted tokens per sequence: x0 [B, L] -> [B] (with `maskable`, those inside it)."""
        return self._targets(x0, maskable)[1].sum(-1)
