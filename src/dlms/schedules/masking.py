"""Masking schedules for absorbing-state diffusion.

alpha(t) is the probability that a token is still clean at time t in [0, 1]: alpha(0) ~ 1
(data), alpha(1) ~ 0 (all masked). The continuous-time ELBO weights the cross-entropy of
masked tokens by -alpha'(t) / (1 - alpha(t)).
"""
from __future__ import annotations

import math

import torch

from .registry import SCHEDULES


class MaskingSchedule:
    """Base: subclasses define `alpha` and `alpha_prime` as functions of t [B] -> [B]."""

    kind = "masking"

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def alpha_prime(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def mask_prob(self, t: torch.Tensor) -> torch.Tensor:
        """Probability that a token is masked at time t: 1 - alpha(t)."""
        return 1.0 - self.alpha(t)

    def time_of_mask_prob(self, p: float) -> float:
        """The t at which the mask probability reaches p (bisection; mask_prob is increasing).

        Truncating the ELBO integral at this t drops the same sliver (mask probability below p)
        for every schedule; truncating at a fixed t would drop 2% of the masking range for `linear`.
        """
        lo, hi = 0.0, 1.0
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            if float(self.mask_prob(torch.tensor(mid, dtype=torch.float64))) < p:
                lo = mid
            else:
                hi = mid
        return hi

    def discrete_elbo_weight(self, t: torch.Tensor, steps: int) -> torch.Tensor:
        """Weight of the masked cross-entropy at t = i / steps in the `steps`-step ELBO, times
        `steps` (t is drawn uniformly from the grid): steps * (m(t) - m(t - 1/steps)) / m(t),
        m = mask_prob. It tends to `elbo_weight` as steps grows."""
        m_t, m_s = self.mask_prob(t), self.mask_prob((t - 1.0 / steps).clamp(min=0.0))
        return steps * (m_t - m_s) / m_t

    def elbo_weight(self, t: torch.Tensor) -> torch.Tensor:
        """-alpha'(t) / (1 - alpha(t)) >= 0, the weight of the masked cross-entropy."""
        return -self.alpha_prime(t) / (1.0 - self.alpha(t))


@SCHEDULES.register("loglinear")
class LogLinearSchedule(MaskingSchedule):
    """alpha(t) = 1 - t: the mask probability grows linearly; weight 1/t (MDLM's default)."""

    def alpha(self, t):
        return 1.0 - t

    def alpha_prime(self, t):
        return -torch.ones_like(t)


@SCHEDULES.register("cosine")
class CosineSchedule(MaskingSchedule):
    """alpha(t) = cos(pi t / 2): few tokens masked early, many late."""

    def alpha(self, t):
        return torch.cos(0.5 * math.pi * t)

    def alpha_prime(self, t):
        return -0.5 * math.pi * torch.sin(0.5 * math.pi * t)


@SCHEDULES.register("linear")
class LinearSigmaSchedule(MaskingSchedule):
    """alpha(t) = exp(-sigma(t)) with sigma linear in t from sigma_min to sigma_max."""

    def __init__(self, sigma_min: float = 1e-4, sigma_max: float = 20.0):
        self.sigma_min = sigma_min
        self.sigma_max = sigma_max

    def _sigma(self, t):
        return self.sigma_min + t * (self.sigma_max - self.sigma_min)

    def alpha(self, t):
        return torch.exp(-self._sigma(t))

    def alpha_prime(self, t):
        return -(self.sigma_max - self.sigma_min) * torch.exp(-self._sigma(t))
