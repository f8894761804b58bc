"""Log-likelihood of a continuation given a context, for any method: exact for AR, minus the
ELBO (a lower bound, Monte Carlo) for diffusion. Multiple choice and the lm-eval adapter use it.

Tokenization follows lm-evaluation-harness: the context and context+continuation are encoded
whole and the continuation is what the second adds, so word boundaries match plain text. The
sequence scored is start tokens + context + continuation (no end-of-text, no padding); for a
diffusion model only the continuation is noised, the context stays clean. A sequence longer than
the model's maximum loses context tokens from the left.

Each pair gets its own random stream seeded by (seed, its index), its passes stratified in t, and
pairs are batched only with pairs of the same length: scores do not depend on the batch size.
"""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .errors import DlmsError
from .likelihood import _sequence_noise


def encode_pair(tokenizer, start: list[int], context: str, continuation: str, max_len: int) -> tuple[list[int], int]:
    """(ids of start + context + continuation, number of continuation tokens), cut to max_len."""
    whole = tokenizer.encode(context + continuation, add_special_tokens=False)
    ctx = tokenizer.encode(context, add_special_tokens=False) if context else []
    n_ctx = len(ctx) if whole[: len(ctx)] == ctx else len(whole) - len(tokenizer.encode(continuation, add_special_tokens=False))
    cont = whole[n_ctx:]
    if not cont:
        raise DlmsError(f"the continuation {continuation!r} has no tokens; every choice needs some text")
    if len(cont) + len(start) >= max_len:
        raise DlmsError(f"a continuation of {len(cont)} tokens does not fit the model's {max_len} positions; "
                        "shorten it")
    ids = start + whole[:n_ctx] + cont
    if len(ids) > max_len:  # drop the oldest context, keep the start tokens
        ids = start + ids[len(ids) - max_len + len(start):]
    return ids, len(cont)


@torch.no_grad()
def score_sequences(method, model, rows: Sequence[tuple[list[int], int]], *, passes: int = 8, seed: int = 0,
                    batch_size: int = 32, labels: Sequence[int] | None = None,
                    device: torch.device | None = None) -> list[dict[str, Any]]:
    """For (ids, n_cont) rows, the log-likelihood of the last n_cont tokens given the rest.

    Returns per row {"logprob", "se", "tokens", "greedy"}: logprob in nats (for diffusion the
    mean over `passes` of minus the ELBO, with its Monte Carlo standard error `se`); `greedy`
    says whether greedy decoding reproduces the continuation (AR only; False otherwise).
    """
    model.eval()
    device = device or next(model.parameters()).device
    by_length: dict[int, list[int]] = defaultdict(list)
    for index, (ids, _) in enumerate(rows):
        by_length[len(ids)].append(index)
    out: list[dict[str, Any]] = [{} for _ in rows]
    for length, indices in sorted(by_length.items()):
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            x = torch.tensor([rows[i][0] for i in chunk], device=device)
            score = torch.zeros_like(x, dtype=torch.bool)
            for j, i in enumerate(chunk):
                score[j, length - rows[i][1]:] = True
            lab = None if labels is None else torch.tensor([labels[i] for i in chunk], device=device)
            if method.causal:
                logp, greedy = _causal_scores(model, x, score, lab)
                for j, i in enumerate(chunk):
                    out[i] = {"logprob": float(logp[j]), "se": 0.0, "tokens": rows[i][1], "greedy": bool(greedy[j])}
            else:
                noise = [_sequence_noise(method, i, seed, passes, length, device) for i in chunk]
                est = torch.stack([
                    -method.sequence_nll(model, x, lab, t=torch.stack([n[0][k] for n in noise]),
                                         u=torch.stack([n[1][k] for n in noise]), maskable=score).float()
                    for k in range(passes)])  # [K, B]
                # One pass has no standard error (None), not a zero one.
                se = (est.var(0, unbiased=True) / passes).sqrt().tolist() if passes > 1 else [None] * len(chunk)
                for j, i in enumerate(chunk):
                    out[i] = {"logprob": float(est[:, j].mean()), "se": se[j], "tokens": rows[i][1],
                              "greedy": False}
    return out


def _causal_scores(model, x: torch.Tensor, score: torch.Tensor, labels) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact sum of log p over the scored positions [B], and whether each is the argmax everywhere [B]."""
    logits = model(x[:, :-1], labels=labels).float()  # position l predicts token l + 1
    logp = F.log_softmax(logits, dim=-1)
    targets, keep = x[:, 1:], score[:, 1:]
    token_logp = logp.gather(-1, targets[..., None]).squeeze(-1)
    greedy = ((logp.argmax(-1) == targets) | ~keep).all(-1)
    return (token_logp * keep).sum(-1), greedy


def perplexity(logprobs: Sequence[float], tokens: Sequence[int]) -> float:
    """exp(-sum logprob / sum tokens)."""
    return math.exp(min(-sum(logprobs) / max(sum(tokens), 1), 50.0))
