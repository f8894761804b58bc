"""Which device a run, a model or a pipeline computes on (`resolve_device`)."""
from __future__ import annotations

import torch

from .errors import ConfigError


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """'auto' -> cuda (this process's GPU) when available, else cpu."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            said = f"device '{name}' was asked for but no CUDA GPU is visible"
            raise ConfigError(f"{said}; use device 'cpu' (or 'auto')", cli=f"{said}; use --device cpu")
        return torch.device("cuda", local_rank) if name == "cuda" else torch.device(name)
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device '{name}'; use auto, cpu or cuda") from None
