"""dlms: a framework for diffusion language models.

Importing `dlms` is light: the public classes load on first use.
"""
from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["DiffusionLM", "Trainer", "DatasetBuilder", "load_config"]


def __getattr__(name: str):
    if name == "DiffusionLM":
        from .model import DiffusionLM

        return DiffusionLM
    if name == "Trainer":
        from .training import Trainer

        return Trainer
    if name == "DatasetBuilder":
        from .data import DatasetBuilder

        return DatasetBuilder
    if name == "load_config":
        from .config import load_config

        return load_config
    raise AttributeError(f"module 'dlms' has no attribute {name!r}")
