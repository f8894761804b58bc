"""Methods: the forward corruption, the training loss and the likelihood. No loops here.

Every method subclasses `Method` (base.py: the interface, each optional hook with its default)
and names its options dataclass (`options`, dlms/method_options/), registered there under the
same name."""
from __future__ import annotations

from ..errors import ConfigError
from ..method_options import MethodConfig
from ..registry import Registry
from .autoregressive import Autoregressive
from .base import LossOutput, Method, SpecialTokens
from .block import BlockDiffusion
from .gaussian import GaussianDiffusion
from .masked import MaskedDiffusion

METHODS: Registry[type[Method]] = Registry("method")
METHODS.register("masked")(MaskedDiffusion)
METHODS.register("block")(BlockDiffusion)
METHODS.register("ar")(Autoregressive)
METHODS.register("gaussian")(GaussianDiffusion)


def build_method(cfg: MethodConfig, special: SpecialTokens) -> Method:
    """The method named by `cfg.name`, bound to the tokenizer's special ids; `cfg` must be that
    method's options dataclass (e.g. MaskedOptions for masked)."""
    cls = METHODS.get(cfg.name)
    if not isinstance(cfg, cls.options):
        raise ConfigError(f"method '{cfg.name}' takes its options as {cls.options.__name__}, got "
                          f"{type(cfg).__name__}; pass {cls.options.__name__}(...) from dlms.method_options")
    return cls(cfg, special)


__all__ = ["METHODS", "Autoregressive", "BlockDiffusion", "GaussianDiffusion", "LossOutput", "MaskedDiffusion",
           "Method", "SpecialTokens", "build_method"]
