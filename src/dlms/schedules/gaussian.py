"""Gaussian (variance-preserving) noise schedules in continuous time, by their log-SNR.

z_t = alpha(t) x0 + sigma(t) eps with alpha^2 + sigma^2 = 1, so everything follows from the
log signal-to-noise ratio lambda(t) = log(alpha^2 / sigma^2):
alpha(t) = sqrt(sigmoid(lambda)), sigma(t) = sqrt(sigmoid(-lambda)).

Clipping: lambda runs from `logsnr_max` at t = 0 (almost clean: sigma(0) = 0.0067 for the default
10) down to `logsnr_min` at t = 1 (almost pure noise: alpha(1) = 0.0067 for the default -10).
The clipping is built into each schedule rather than applied with a clamp: the t axis is mapped
onto the part of the curve between the two limits (as in "simple diffusion", Hoogeboom et al.
2023), so lambda is smooth and strictly decreasing on all of [0, 1] and its derivative is never
zero. The continuous-time likelihood bound can then integrate over t in [0, 1] without flat
stretches, with its reconstruction term at t = 0 and its prior term at t = 1.

Names are prefixed `logsnr-` so that they never clash with the masking schedules.
"""
from __future__ import annotations

import math

import torch

from .registry import SCHEDULES

LOGSNR_MIN = -10.0
LOGSNR_MAX = 10.0


class GaussianSchedule:
    """Base: subclasses define `log_snr` and `log_snr_prime` as functions of t [B] -> [B]."""

    kind = "gaussian"

    def __init__(self, logsnr_min: float = LOGSNR_MIN, logsnr_max: float = LOGSNR_MAX):
        if not logsnr_min < logsnr_max:
            raise ValueError(f"logsnr_min {logsnr_min} must be below logsnr_max {logsnr_max}")
        self.logsnr_min = float(logsnr_min)
        self.logsnr_max = float(logsnr_max)

    def log_snr(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def log_snr_prime(self, t: torch.Tensor) -> torch.Tensor:
        """d lambda / dt < 0."""
        raise NotImplementedError

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        """Signal scale sqrt(sigmoid(lambda(t)))."""
        return torch.sigmoid(self.log_snr(t)).sqrt()

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """Noise scale sqrt(sigmoid(-lambda(t)))."""
        return torch.sigmoid(-self.log_snr(t)).sqrt()


def _cosine(t: torch.Tensor, logsnr_min: float, logsnr_max: float) -> tuple[torch.Tensor, torch.Tensor]:
    """lambda(t) = -2 log tan(a t + b), with a, b such that lambda(0) = max and lambda(1) = min;
    returns (lambda, d lambda / dt)."""
    b = math.atan(math.exp(-0.5 * logsnr_max))
    a = math.atan(math.exp(-0.5 * logsnr_min)) - b
    angle = a * t + b
    return -2.0 * torch.log(torch.tan(angle)), -4.0 * a / torch.sin(2.0 * angle)


@SCHEDULES.register("logsnr-cosine")
class CosineLogSNR(GaussianSchedule):
    """The cosine schedule (alpha = cos(pi t / 2) before clipping): lambda = -2 log tan(pi t / 2),
    mapped onto [logsnr_min, logsnr_max]."""

    def log_snr(self, t):
        return _cosine(t, self.logsnr_min, self.logsnr_max)[0]

    def log_snr_prime(self, t):
        return _cosine(t, self.logsnr_min, self.logsnr_max)[1]


@SCHEDULES.register("logsnr-linear")
class LinearLogSNR(GaussianSchedule):
    """lambda falls linearly from logsnr_max at t = 0 to logsnr_min at t = 1."""

    def log_snr(self, t):
        return self.logsnr_max + (self.logsnr_min - self.logsnr_max) * t

    def log_snr_prime(self, t):
        return torch.full_like(t, self.logsnr_min - self.logsnr_max)


@SCHEDULES.register("logsnr-shifted-cosine")
class ShiftedCosineLogSNR(GaussianSchedule):
    """The cosine schedule shifted in log-SNR by 2 log(shift) ("simple diffusion": the cosine
    schedule of a 64x64 image used at resolution 64 / shift). shift < 1 spends more of the time
    at low SNR (more noise), which text embeddings need; the default 0.5 lowers the SNR 4x.
    The endpoints stay at [logsnr_min, logsnr_max]."""

    def __init__(self, logsnr_min: float = LOGSNR_MIN, logsnr_max: float = LOGSNR_MAX, shift: float = 0.5):
        super().__init__(logsnr_min, logsnr_max)
        if shift <= 0:
            raise ValueError(f"shift must be positive, got {shift}")
        self.offset = 2.0 * math.log(shift)

    def log_snr(self, t):
        return _cosine(t, self.logsnr_min - self.offset, self.logsnr_max - self.offset)[0] + self.offset

    def log_snr_prime(self, t):
        return _cosine(t, self.logsnr_min - self.offset, self.logsnr_max - self.offset)[1]
