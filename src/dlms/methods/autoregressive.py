"""The autoregressive baseline: next-token prediction on the same (causal) backbone, exact NLL.

Pads after the end-of-text are not modelled. On prompt/response rows (methods/base.py) only the
response's tokens and its end-of-text are scored: the exact -log p(response | prompt).

Prompt dropout (`train.prompt_drop_prob`, methods/base.py): a dropped row's prompt is shown as
mask tokens, the token no other input of this method holds, so the network learns p(response |
a prompt of this length, hidden). The sampler's unconditional branch under guidance on the prompt
shows the prompt the same way: one row of the same length beside the conditional one, sharing the
batch (and the KV cache) as guidance on a label does. The length of the prompt still shows, as in
masked diffusion's guidance (LLaDA). A run trained without prompt dropout has never seen the mask
token as input, so guidance on the prompt is refused for it (`guides_untrained_prompts`).

Input token masking (`method.input_mask_prob`, in training only): that share of the input tokens
after the start token is shown as the mask token while every target stays, a regulariser for AR
on repeated data (the token-masking ablations of the data-constrained diffusion-vs-AR studies).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..method_options import AROptions
from .base import LossOutput, Method, SpecialTokens, dropped_prompts, response_mask


class Autoregressive(Method):
    name = "ar"
    options = AROptions
    causal = True
    default_sampler = "ar"
    extends_past_training_length = False  # samples at most as long as the training rows
    stochastic_bound = False  # the likelihood is exact
    trains_on_responses = True  # the prompt hook (methods/base.py): `maskable`, batch["prompt_len"]
    drops_prompts = True  # a dropped prompt is shown as mask tokens (see above)
    guides_untrained_prompts = False  # guidance on the prompt needs a run trained with prompt dropout

    def __init__(self, cfg: AROptions, special: SpecialTokens):
        super().__init__(cfg, special)

    def _targets(self, x0: torch.Tensor, maskable: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Targets x0[:, 1:] and which of them count: pads after the end of text are not modelled,
        and with `maskable` bool [B, L] only the targets inside it are."""
        targets = x0[:, 1:]
        keep = targets != self.special.pad
        return targets, keep if maskable is None else keep & maskable[:, 1:]

    def sequence_nll(self, model, x0: torch.Tensor, labels: torch.Tensor | None = None, *,
                     maskable: torch.Tensor | None = None, hidden: torch.Tensor | None = None) -> torch.Tensor:
        """Exact -log p(x0[1:] | x0[0]) per sequence (nats): x0 [B, L] -> [B]. With `maskable`
        (bool [B, L], a suffix of each row) -log p(x0[maskable] | x0[~maskable]); `hidden` (bool
        [B, L]) shows those inputs as the mask token (a dropped prompt, input token masking)."""
        inputs = x0 if hidden is None else x0.masked_fill(hidden, self.special.mask)
        logits = model(inputs[:, :-1], labels=labels).float()
        targets, keep = self._targets(x0, maskable)
        # Flattened rows: cross_entropy on a transposed [B, V, L] view is markedly slower.
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                              reduction="none").view_as(targets)  # [B, L-1]
        return (nll * keep).sum(-1)

    def loss(self, model, batch: dict) -> LossOutput:
        x0 = batch["input_ids"]
        maskable = response_mask(batch, x0)  # None: every position
        hidden = dropped_prompts(batch, x0)
        if self.cfg.input_mask_prob > 0 and model.training:
            masked = torch.rand(x0.shape, device=x0.device) < self.cfg.input_mask_prob
            masked[:, 0] = False  # the start token: every row has it
            hidden = masked if hidden is None else hidden | masked
        nll = self.sequence_nll(model, x0, batch.get("labels"), maskable=maskable, hidden=hidden)
        tokens = self.scored_tokens(x0, maskable).sum().clamp(min=1)
        loss = nll.sum() / tokens
        return LossOutput(loss, {"loss": loss.item(), "nll": loss.item()})

    def scored_tokens(self, x0: torch.Tensor, maskable: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted tokens per sequence: x0 [B, L] -> [B] (with `maskable`, those inside it)."""
        return self._targets(x0, maskable)[1].sum(-1)
