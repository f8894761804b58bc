"""Methods: the forward corruption, the training loss and the likelihood. No loops here."""
from __future__ import annotations

from ..config import MethodConfig
from ..registry import Registry
from .autoregressive import Autoregressive
from .base import LossOutput, SpecialTokens
from .block import BlockDiffusion
from .gaussian import GaussianDiffusion
from .masked import MaskedDiffusion

METHODS: Registry = Registry("method")
METHODS.register("masked")(MaskedDiffusion)
METHODS.register("block")(BlockDiffusion)
METHODS.register("ar")(Autoregressive)
METHODS.register("gaussian")(GaussianDiffusion)


def build_method(cfg: MethodConfig, special: SpecialTokens):
    """The method named by `cfg.name`, bound to the tokenizer's special ids."""
    return METHODS.get(cfg.name)(cfg, special)


__all__ = ["METHODS", "Autoregressive", "BlockDiffusion", "GaussianDiffusion", "LossOutput", "MaskedDiffusion",
           "SpecialTokens", "build_method"]
