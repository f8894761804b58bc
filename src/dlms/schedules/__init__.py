"""Noise schedules: maths of t in [0, 1]; they import torch and nothing else of the project."""
from . import gaussian, masking  # noqa: F401  (register the schedules)
from .gaussian import GaussianSchedule
from .masking import MaskingSchedule
from .registry import SCHEDULES


def build_schedule(name: str):
    """An instance of the schedule registered under `name`."""
    return SCHEDULES.get(name)()


def schedule_names(kind: str) -> list[str]:
    """Registered schedules of one kind ("masking" or "gaussian"), sorted."""
    return [n for n in SCHEDULES.names() if getattr(SCHEDULES.get(n), "kind", None) == kind]


__all__ = ["SCHEDULES", "GaussianSchedule", "MaskingSchedule", "build_schedule", "schedule_names"]
