"""Samplers: the reverse process, one file per family. Guidance lives here too."""
from __future__ import annotations

from ..errors import ConfigError
from ..registry import Registry
from .autoregressive import AutoregressiveSampler
from .gaussian import DDIMSampler, DDPMSampler
from .masked import AncestralSampler, CachedAncestralSampler, ConfidenceSampler, ThresholdSampler

SAMPLERS: Registry = Registry("sampler")
for _cls in (AncestralSampler, CachedAncestralSampler, ConfidenceSampler, ThresholdSampler, AutoregressiveSampler, DDPMSampler,
             DDIMSampler):
    SAMPLERS.register(_cls.name)(_cls)


def build_sampler(name: str, method, model):
    """The sampler `name` ('auto' = the method's default), checked against the method."""
    if name == "auto":
        name = method.default_sampler
    cls = SAMPLERS.get(name)
    if method.name not in cls.method_names:
        fits = [n for n in SAMPLERS.names() if method.name in SAMPLERS.get(n).method_names]
        raise ConfigError(f"sampler '{name}' does not work with method '{method.name}'; use one of: {', '.join(fits)}")
    return cls(method, model)


__all__ = ["SAMPLERS", "build_sampler"]
