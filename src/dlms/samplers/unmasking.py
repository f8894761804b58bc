"""Update rules of masked diffusion: which masked positions a step commits, as plain functions.

Every rule takes the positions that may be committed this step (`candidates`, bool [B, L]) and
returns the ones it commits (bool [B, L], a subset). The samplers in masked.py call them, and
so can anything else that unmasks tokens (a distillation teacher, a latent model, a server).

Confidence of a proposed token (`confidence_scores`):
- "prob": its probability p(x0 = token | x_t) (LLaDA, Fast-dLLM);
- "margin": the top-1 minus the top-2 probability (decisive positions first);
- "entropy": exp(-entropy) of the position's distribution, in (0, 1] (peaked positions first;
  1 for a sure position, 1/V for a uniform one), so a threshold reads as for "prob": 0.9 commits
  positions with at most 0.105 nats of entropy. It depends on the distribution only, never on the
  drawn token, so choosing positions by it does not favour likely draws.
"""
from __future__ import annotations

from typing import Literal

import torch

from .randomness import Generators, at, uniform

ConfidenceKind = Literal["prob", "margin", "entropy"]
CONFIDENCE_KINDS = ("prob", "margin", "entropy")


def confidence_scores(logits: torch.Tensor, proposal: torch.Tensor, kind: ConfidenceKind = "prob") -> torch.Tensor:
    """logits [M, V] (filtered, float32), proposal [M] -> confidence [M] (higher: surer)."""
    probs = logits.float().softmax(-1)
    if kind == "prob":
        return probs.gather(-1, proposal[:, None]).squeeze(-1)
    if kind == "margin":
        top2 = probs.topk(min(2, probs.shape[-1]), dim=-1).values
        return top2[:, 0] - (top2[:, 1] if top2.shape[-1] > 1 else 0.0)
    if kind == "entropy":
        logp = logits.float().log_softmax(-1)
        return (probs * logp.masked_fill(probs == 0, 0.0)).sum(-1).exp()
    raise ValueError(f"unknown confidence '{kind}'; use one of: {', '.join(CONFIDENCE_KINDS)}")


def ancestral_reveal(candidates: torch.Tensor, reveal_prob: float, generator: Generators = None) -> torch.Tensor:
    """The reverse of the forward masking: each candidate is revealed with `reveal_prob`
    ((alpha_s - alpha_t) / (1 - alpha_t) from t to s). Draws one uniform per candidate in
    row-major order, so results do not depend on anything but the candidates and the generator."""
    u = uniform((int(candidates.sum()),), at(generator, candidates), dtype=torch.float64, device=candidates.device)
    reveal = torch.zeros_like(candidates)
    reveal[candidates] = u < reveal_prob
    return reveal


def commit_most_confident(confidence: torch.Tensor, candidates: torch.Tensor, quota: torch.Tensor) -> torch.Tensor:
    """The `quota[b]` most confident candidates of each row: confidence [B, L], quota long [B]."""
    scores = confidence.masked_fill(~candidates, float("-inf"))
    order = scores.argsort(dim=-1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(-1, order, torch.arange(scores.shape[1], device=scores.device)
                                            .expand_as(order))
    return candidates & (rank < quota[:, None])


def commit_random(candidates: torch.Tensor, quota: torch.Tensor, generator: Generators = None) -> torch.Tensor:
    """`quota[b]` candidates of each row chosen uniformly at random (LLaDA's random remasking)."""
    noise = uniform(candidates.shape, generator, dtype=torch.float64, device=candidates.device)
    return commit_most_confident(noise.float(), candidates, quota)


def commit_above_threshold(confidence: torch.Tensor, candidates: torch.Tensor, threshold: float) -> torch.Tensor:
    """Every candidate whose confidence reaches `threshold`, and in each row with candidates at
    least its most confident one, so that every step makes progress (Fast-dLLM)."""
    keep = candidates & (confidence >= threshold)
    at_least_one = commit_most_confident(confidence, candidates, candidates.any(-1).long())
    return keep | at_least_one


def commit_by_factor(confidence: torch.Tensor, candidates: torch.Tensor, factor: float) -> torch.Tensor:
    """Fast-dLLM's factor rule: with the candidates' confidences sorted c_1 >= c_2 >= ..., commit
    the largest n with (n + 1) * (1 - c_n) < factor (at least one per row with candidates).
    The more confident the positions, the more of them one step may decide at once."""
    scores = confidence.masked_fill(~candidates, float("-inf"))
    ordered = scores.sort(dim=-1, descending=True).values  # [B, L]
    n = torch.arange(1, scores.shape[1] + 1, device=scores.device, dtype=ordered.dtype)
    passes = ((n + 1) * (1 - ordered) < factor) & torch.isfinite(ordered)
    # The rule holds for a prefix of the sorted list: count until the first failure.
    count = passes.long().cumprod(-1).sum(-1)
    quota = torch.maximum(count, candidates.any(-1).long())
    return commit_most_confident(confidence, candidates, quota)


def ends_wait_for_the_text(x: torch.Tensor, candidates: torch.Tensor, tokens: torch.Tensor, mask_id: int,
                           end_ids: tuple[int, ...]) -> torch.Tensor:
    """The candidates a confidence rule may commit: an end-of-text (or padding) proposal only at
    the first masked position of its row. Where a text ends is decided once everything before
    it is written; otherwise the sure padding at the far end of a canvas is committed first and
    the text shrinks to nothing. x, tokens long [B, L] (the canvas and the proposals) -> bool [B, L]."""
    masked = x == mask_id
    frontier = masked & (masked.cumsum(-1) == 1)
    is_end = torch.zeros_like(candidates)
    for end in end_ids:
        is_end |= tokens == end
    return candidates & (~is_end | frontier)


def even_quota(remaining: torch.Tensor, steps_left: int) -> torch.Tensor:
    """An even share of what is left, rounded up: remaining long [B] -> [B]; with it every row
    finishes exactly at the last step."""
    return torch.div(remaining + steps_left - 1, steps_left, rounding_mode="floor")


def first_end_probs(end_probs: torch.Tensor, cumulative: bool, pad_probs: torch.Tensor | None = None) -> torch.Tensor:
    """The probability that a text's end falls at each of n positions in a row, from the model's
    probability of an end-of-text token there (end_probs [B, n], each given what is decoded).

    Where an end-of-text token appears once per text (padding or the next text follows it), that
    is the same thing; and padding at the next position (`pad_probs` [B, n], the probability of a
    padding token at each position) says the text has ended by then, so the chance that it has
    ended by position q is the larger of the two readings: the end-of-text probabilities summed up
    to q, and the padding probability at q + 1. (A padded model that is unsure which position its
    end falls on spreads that mass over the padding after it; read from the end-of-text token alone
    the texts ran long on Yelp sentences.) Where every position after the end holds the
    end-of-text token (`cumulative`: a tokenizer whose padding is its end-of-text token), a
    position's probability counts all earlier ends, and the end's own probability is its rise
    over the largest before it. -> [B, n]."""
    if cumulative:
        ended = end_probs.cummax(-1).values
    else:
        ended = end_probs.cumsum(-1)
        if pad_probs is not None:
            ended[..., :-1] = torch.maximum(ended[..., :-1], pad_probs[..., 1:])
        ended = ended.cummax(-1).values.clamp(max=1.0)
    before = ended.roll(1, -1)
    before[..., 0] = 0.0
    return (ended - before).clamp(min=0.0)


def draw_text_end(end_probs: torch.Tensor, generator: Generators = None, *,
                  quantile: torch.Tensor | None = None) -> torch.Tensor:
    """Where each row's text ends inside a block, drawn before any of the block's words.

    end_probs [B, n]: the probability that the text's end-of-text falls at each of the block's n
    positions (0 where it may not); their sum is the chance that the text ends in this block. The
    end is the first position whose cumulative probability passes a uniform u, so where the sum
    passes 1 (a model sure of an end at several positions) the earlier positions keep their
    probabilities and the rest of the mass goes to the position where it passes 1. -> long [B]:
    the position 0..n-1 of the end, or n when the text goes on past the block. One uniform per
    row, drawn in float64; `quantile` (float [B], greedy decoding) gives each row's u instead."""
    probs = end_probs.double()
    if quantile is not None:
        u = quantile.double()
    else:
        u = uniform((probs.shape[0],), generator, dtype=torch.float64, device=probs.device)
    # The first position whose cumulative probability passes u; n when none does.
    return (probs.cumsum(-1) <= u[:, None]).sum(-1)

