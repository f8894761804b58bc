"""The autoregressive baseline: next-token prediction on the same (causal) backbone, exact NLL."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import MethodConfig
from .base import LossOutput, SpecialTokens


class Autoregressive:
    name = "ar"
    causal = True
    default_sampler = "ar"
    extends_past_training_length = False  # samples at most as long as the training rows
    stochastic_bound = False  # the likelihood is exact

    def __init__(self, cfg: MethodConfig, special: SpecialTokens):
        self.cfg = cfg
        self.special = special

    def _targets(self, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Targets x0[:, 1:] and which of them count: pads after the end of text are not modelled."""
        targets = x0[:, 1:]
        return targets, targets != self.special.pad

    def sequence_nll(self, model, x0: torch.Tensor, labels: torch.Tensor | None = None, **_) -> torch.Tensor:
        """Exact -log p(x0[1:] | x0[0]) per sequence (nats): x0 [B, L] -> [B]."""
        logits = model(x0[:, :-1], labels=labels).float()
        targets, keep = self._targets(x0)
        # Flattened rows: cross_entropy on a transposed [B, V, L] view is markedly slower.
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                              reduction="none").view_as(targets)  # [B, L-1]
        return (nll * keep).sum(-1)

    def loss(self, model, batch: dict) -> LossOutput:
        x0 = batch["input_ids"]
        nll = self.sequence_nll(model, x0, batch.get("labels"))
        tokens = self.scored_tokens(x0).sum().clamp(min=1)
        loss = nll.sum() / tokens
        return LossOutput(loss, {"loss": loss.item(), "nll": loss.item()})

    def scored_tokens(self, x0: torch.Tensor) -> torch.Tensor:
        """Predicted tokens per sequence: x0 [B, L] -> [B]."""
        return self._targets(x0)[1].sum(-1)
