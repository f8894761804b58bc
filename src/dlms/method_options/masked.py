"""The options of masked (absorbing-state) diffusion: dlms/methods/masked.py."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .base import MethodConfig


@dataclass
class MaskedOptions(MethodConfig):
    name: Literal["masked"] = "masked"
    # A name in dlms.schedules.SCHEDULES of the masking kind; auto: loglinear. Training saves
    # the resolved name.
    schedule: str = "auto"
    antithetic: bool = True  # stratified t across the batch: lower-variance loss
    eps: float = 1e-3  # smallest mask probability (sets t_min): keeps the 1/t weight finite

    RANGES = (("eps", lambda v: 0 < v < 0.5, "in (0, 0.5)"),)
