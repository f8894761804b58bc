"""What the options of every method share: the method's name.

Each method's own options are a dataclass of their own that subclasses `MethodConfig`, one file
per family beside this one (masked.py, block.py, gaussian.py, autoregressive.py), registered
under the method's name in `METHOD_OPTIONS` (__init__.py). config.py reads the `method:` section
through that registry: the YAML stays flat (`method: {name: block, block_size: 8}`), and an option
of another method is an error that names the methods it belongs to.

They sit at the config layer, below dlms.methods, because the config is parsed before any method
is imported; each method class names its options dataclass (`Method.options`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar

# (option, test, what the value must be): checked after the types, like config.py's ranges.
Range = tuple[str, Callable[[Any], bool], str]


@dataclass
class MethodConfig:
    """Which method: a name in dlms.methods.METHODS. Its options are the fields of the subclass
    registered under that name (`METHOD_OPTIONS`); this class alone configures no method."""

    name: str
    RANGES: ClassVar[tuple[Range, ...]] = ()
