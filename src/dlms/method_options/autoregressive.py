"""The options of the autoregressive baseline: dlms/methods/autoregressive.py. It has no noise,
so no schedule and no time sampling: those keys are errors on an ar run."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .base import MethodConfig


@dataclass
class AROptions(MethodConfig):
    name: Literal["ar"] = "ar"
    # The share of input tokens (after the start token) shown as the mask token in training,
    # while the targets stay (input token masking: regularises AR on repeated data).
    input_mask_prob: float = 0.0

    RANGES = (("input_mask_prob", lambda v: 0 <= v < 1, "in [0, 1) (1 would show no input)"),)
