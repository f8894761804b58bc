"""Each method's options, registered under the method's name (see base.py)."""
from __future__ import annotations

import dataclasses

from ..registry import Registry
from .autoregressive import AROptions
from .base import MethodConfig
from .block import BlockOptions
from .gaussian import GaussianOptions
from .masked import MaskedOptions

METHOD_OPTIONS: Registry[type[MethodConfig]] = Registry("method")
METHOD_OPTIONS.register("masked")(MaskedOptions)
METHOD_OPTIONS.register("block")(BlockOptions)
METHOD_OPTIONS.register("ar")(AROptions)
METHOD_OPTIONS.register("gaussian")(GaussianOptions)

DEFAULT_METHOD = "masked"  # a `method:` section without a name


def option_names(name: str) -> list[str]:
    """The keys of method `name`'s section, `name` itself included."""
    return [f.name for f in dataclasses.fields(METHOD_OPTIONS.get(name))]


def methods_with(option: str) -> list[str]:
    """The registered methods that have `option`, by name."""
    return [n for n in METHOD_OPTIONS.names() if option in option_names(n)]


def option_default(name: str, option: str):
    """The default of `option` in method `name`'s options."""
    field = {f.name: f for f in dataclasses.fields(METHOD_OPTIONS.get(name))}[option]
    return field.default


__all__ = ["AROptions", "BlockOptions", "DEFAULT_METHOD", "GaussianOptions", "METHOD_OPTIONS", "MaskedOptions",
           "MethodConfig", "methods_with", "option_default", "option_names"]
