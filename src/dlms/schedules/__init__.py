"""Noise schedules: maths of t in [0, 1]; they import torch and nothing else of the project."""
from . import masking  # noqa: F401  (registers the masking schedules)
from .masking import MaskingSchedule
from .registry import SCHEDULES


def build_schedule(name: str):
    """An instance of the schedule registered under `name`."""
    return SCHEDULES.get(name)()


__all__ = ["SCHEDULES", "MaskingSchedule", "build_schedule"]
