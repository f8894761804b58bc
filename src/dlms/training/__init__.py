"""Training: the loop, checkpoints, data parallelism, EMA and progress."""
from .trainer import Trainer

__all__ = ["Trainer"]
