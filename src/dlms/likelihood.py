"""Likelihood on held-out data: the ELBO bound for diffusion methods, exact NLL for AR.

Every sequence gets its own random stream, seeded by (seed, its index in the split), and its
Monte Carlo passes are stratified in t. So the numbers do not depend on the batch size, fixed
seeds reproduce them, and the reported standard error is the Monte Carlo error of the mean.

A split of prompt/response rows (`split.prompt_len`) is scored as the response given the prompt:
the prompt held clean (`maskable`, methods/base.py), per response token (its end-of-text counted).
"""
from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch

from .errors import DataError
from .methods.base import unwrap


def _sequence_noise(method, index: int, seed: int, passes: int, length: int, device: torch.device,
                    discrete_steps: int | None = None):
    """Per-sequence times [K] (stratified over the K passes) and uniforms [K, L]. With
    `discrete_steps` T the times lie on the grid i / T, i = 1..T (the same stratified draws)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + index)
    offset = torch.rand(1, generator=g)
    u_t = (offset + torch.arange(passes) / passes) % 1.0
    if discrete_steps is None:
        t = method.t_min + (1.0 - method.t_min) * u_t
    else:
        t = (torch.floor(u_t * discrete_steps) + 1.0) / discrete_steps
    u = torch.rand(passes, length, generator=g)
    return t.to(device), u.to(device)


def response_positions(prompt_len: np.ndarray, length: int, device: torch.device) -> torch.Tensor:
    """bool [B, length]: True at and after each row's prompt length (int [B])."""
    starts = torch.from_numpy(np.asarray(prompt_len, dtype=np.int64)).to(device)
    return torch.arange(length, device=device)[None, :] >= starts[:, None]


def split_labels(split, label_column: str | None) -> np.ndarray | None:
    """The label ids [N] of one column of a split, or None."""
    if label_column is None or split.labels is None:
        return None
    return np.asarray(split.labels[:, list(split.label_columns).index(label_column)])


@torch.no_grad()
def evaluate_likelihood(method, model, split, *, batch_size: int = 32, passes: int = 8, seed: int = 0,
                        max_sequences: int | None = None, label_column: str | None = None,
                        autocast: Any = None, discrete_steps: int | None = None) -> dict[str, float]:
    """Negative log-likelihood per token (a bound for diffusion) with its MC standard error.

    `discrete_steps` T: the T-step discrete-time bound instead of the continuous-time one.
    A split with `prompt_len` (prompt/response rows) is scored as -log p(response | prompt).
    Returns {"nll", "ppl", "se", "tokens", "sequences", "passes", "bound"}; `se` is in nats/token:
    0 for an exact likelihood (AR), None for a bound estimated from one pass (it has none).
    An empty split is a DataError, never a perfect score.
    """
    model.eval()
    device = next(unwrap(model).parameters()).device
    n = len(split) if max_sequences is None else min(len(split), max_sequences)
    if n == 0:
        raise DataError("the validation split is empty, so there is nothing to score; raise data.val_fraction "
                        "or use more data")
    labels_all = split_labels(split, label_column)
    prompt_all = getattr(split, "prompt_len", None)
    passes = passes if method.stochastic_bound else 1
    total, variance, tokens = 0.0, 0.0, 0
    for start in range(0, n, batch_size):
        x0 = torch.from_numpy(np.asarray(split.ids[start : start + batch_size][: n - start]).astype(np.int64)).to(device)
        labels = None
        if labels_all is not None:
            labels = torch.from_numpy(labels_all[start : start + x0.shape[0]].astype(np.int64)).to(device)
        # Only with prompts: a method without the hook still scores plain rows.
        hook = {}
        if prompt_all is not None:
            hook["maskable"] = response_positions(prompt_all[start : start + x0.shape[0]], x0.shape[1], device)
        with autocast or nullcontext():
            if method.stochastic_bound:
                noise = [_sequence_noise(method, start + i, seed, passes, x0.shape[1], device, discrete_steps)
                         for i in range(x0.shape[0])]
                extra = dict(hook) if discrete_steps is None else {"discrete_steps": discrete_steps, **hook}
                per_pass = []
                for k in range(passes):
                    t = torch.stack([nz[0][k] for nz in noise])
                    u = torch.stack([nz[1][k] for nz in noise])
                    per_pass.append(method.sequence_nll(model, x0, labels, t=t, u=u, **extra).float())
                est = torch.stack(per_pass)  # [K, B]
                total += est.mean(0).sum().item()
                if passes > 1:
                    variance += (est.var(0, unbiased=True) / passes).sum().item()
            else:
                total += method.sequence_nll(model, x0, labels, **hook).float().sum().item()
        tokens += int(method.scored_tokens(x0, **hook).sum())
    if tokens == 0:
        raise DataError("the validation rows hold no scored tokens (only padding); check the data")
    nll = total / tokens
    one_pass = method.stochastic_bound and passes < 2
    return {
        "nll": nll,
        "ppl": math.exp(min(nll, 50.0)),
        "se": None if one_pass else math.sqrt(variance) / tokens,
        "tokens": tokens,
        "sequences": n,
        "passes": passes,
        "bound": bool(method.stochastic_bound),
    }
