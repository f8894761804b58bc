"""Score interpolation and the cross-entropy in one autograd function (gaussian training).

Given logits [N, V], token vectors [V, D] and targets [N], it returns

    x0_hat [N, D] = softmax(logits) @ table      (the x0 estimate)
    nll    [N]    = -log softmax(logits)[target]

with a hand-written backward. The result equals `log_softmax`, `exp`, `@` and `gather` chained
through autograd, but it stores only the probabilities and makes about half as many passes over
the [N, V] tensor. On a CPU, with a small model, those passes cost as much as the network.

It always runs in float32, outside any autocast region: under bf16 autocast the product
`probs @ table` would come out in bf16 while the table stays float32, and the backward's
products would mix the two dtypes. Softmax and the cross-entropy want float32 anyway.
"""
from __future__ import annotations

import torch


class _InterpolateWithNLL(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: torch.Tensor, table: torch.Tensor, targets: torch.Tensor):
        logp = torch.log_softmax(logits, dim=-1)
        nll = -logp.gather(-1, targets[:, None]).squeeze(-1)
        probs = logp.exp_()  # in place: log-probs are not needed again
        ctx.save_for_backward(probs, table, targets)
        return probs @ table, nll

    @staticmethod
    def backward(ctx, grad_x0: torch.Tensor, grad_nll: torch.Tensor):
        probs, table, targets = ctx.saved_tensors
        grad_logits = grad_table = None
        if grad_x0 is None:
            grad_x0 = torch.zeros(probs.shape[0], table.shape[1], dtype=probs.dtype, device=probs.device)
        if grad_nll is None:
            grad_nll = torch.zeros(probs.shape[0], dtype=probs.dtype, device=probs.device)
        if ctx.needs_input_grad[0]:
            # d/dlogits of <g, p @ E> and of -log p[y]: p * (g E^T - <p, g E^T>) + g_nll * (p - onehot(y))
            grad_probs = grad_x0 @ table.t()  # [N, V]
            expected = torch.linalg.vecdot(probs, grad_probs)  # [N]
            grad_logits = grad_probs.sub_((expected - grad_nll)[:, None]).mul_(probs)
            grad_logits.scatter_add_(-1, targets[:, None], -grad_nll[:, None])
        if ctx.needs_input_grad[1]:
            grad_table = probs.t() @ grad_x0
        return grad_logits, grad_table, None


def interpolate_with_nll(logits: torch.Tensor, table: torch.Tensor,
                         targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [..., V], table [V, D], targets [...] long -> (x0 estimate [..., D], -log p(target)
    [...]), in float32 (float64 for float64 inputs) whatever the autocast state."""
    shape = logits.shape[:-1]
    with torch.autocast(device_type=logits.device.type, enabled=False):
        x0_hat, nll = _InterpolateWithNLL.apply(at_least_float32(logits.reshape(-1, logits.shape[-1])),
                                                at_least_float32(table), targets.reshape(-1))
    return x0_hat.view(*shape, table.shape[1]), nll.view(shape)


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """x in float32, or as it is when already float32 or float64."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()
