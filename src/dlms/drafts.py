"""A sampling request prepared for its sampler (`Draft`), and running several as one batch.

`DiffusionLM.prepare_sample` / `prepare_infill` check a request and lay out its canvas;
`DiffusionLM.run_drafts` samples a list of drafts in one sampler call when they agree on
everything but their prompt's words, their labels, their seed and their number of samples
(`batch_key`). Each draft's rows draw their randomness from the draft's own generator
(samplers/randomness.py), so a draft's texts are those it gets alone, whatever it is batched
with: this is what lets a server batch requests without changing anyone's answer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Draft:
    """One request, ready to sample: n rows on a canvas of width W.

    canvas long [n, W] (given tokens, the mask token elsewhere), fixed bool [n, W] (held
    positions), prompt bool [n, W] (what guidance without labels hides), labels long [n] or
    None; `width` tokens of each row are returned (W may be wider: a bidirectional model samples
    on its training length). `start`: where the text begins in a returned row, for `decode`
    (None: after the start tokens; a prompt/response run: after the prompt)."""

    sampler: Any
    options: dict[str, Any]
    canvas: torch.Tensor
    fixed: torch.Tensor
    prompt: torch.Tensor
    width: int
    labels: torch.Tensor | None
    seed: int
    start: int | None = None
    solo: bool = False  # never batched with another draft (its sampler reads batch-wide statistics)

    @property
    def rows(self) -> int:
        return int(self.canvas.shape[0])

    def batch_key(self) -> tuple:
        """Drafts with equal keys share one sampler call: the same sampler and options, the same
        canvas width and returned width, the same held positions and prompt positions (their
        tokens may differ), labels on all or none. A solo draft's key is unique."""
        if self.solo:
            return ("solo", id(self))
        pattern = self.fixed[0].cpu().numpy().tobytes() + self.prompt[0].cpu().numpy().tobytes()
        options = tuple(sorted((k, repr(v)) for k, v in self.options.items()))
        return (self.sampler.name, options, int(self.canvas.shape[1]), self.width, self.labels is None, pattern)


def stack_drafts(drafts: list[Draft]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(canvas [N, W], fixed [N, W], prompt [N, W], labels [N] or None) of drafts that share a
    batch key, in order; N the sum of their rows."""
    key = drafts[0].batch_key()
    if any(d.batch_key() != key for d in drafts[1:]):
        raise ValueError("drafts with different sampling settings or canvases cannot share a batch")
    labels = None if drafts[0].labels is None else torch.cat([d.labels for d in drafts])
    return (torch.cat([d.canvas for d in drafts]), torch.cat([d.fixed for d in drafts]),
            torch.cat([d.prompt for d in drafts]), labels)
