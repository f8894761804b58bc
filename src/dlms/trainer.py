"""Public home of the training loop: `from dlms.trainer import Trainer`.

A thin module that only re-exports `Trainer`, which lives in `dlms.training.trainer` (next to
its checkpoint, data-parallel, EMA and progress helpers). It exists so that the documented
import path works; importing it loads torch, as the trainer needs it.
"""
from __future__ import annotations

from .training.trainer import Trainer

__all__ = ["Trainer"]
