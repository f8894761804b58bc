"""Every sampling option in one table: the keyword a sampler's `sample` takes, the argument of
`DiffusionLM.sample` and the `dlms` flag that set it, its type, range and help.

A sampler lists the options it takes in its `options` tuple; `DiffusionLM` passes exactly those
and refuses any other, and the command line builds its flags from this table, so a new option
is declared once.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SamplerOption:
    """One option: `name` is the sampler keyword and the `sample.<name>` config key."""

    name: str
    argument: str  # DiffusionLM.sample's argument; the CLI flag is --<name>
    type: type
    help: str
    low: float | None = None  # inclusive lower bound (numbers)
    high: float | None = None  # inclusive upper bound (numbers)
    low_open: bool = False  # the lower bound itself is not allowed
    choices: tuple[str, ...] | None = None
    note: str = ""  # shown after the range in errors


SAMPLER_OPTIONS: dict[str, SamplerOption] = {o.name: o for o in (
    SamplerOption("num_steps", "steps", int, "denoising steps (masked: spread over the blocks)", 1),
    SamplerOption("temperature", "temperature", float, "sampling temperature (0: greedy)", 0.0, note="0: greedy"),
    SamplerOption("top_k", "top_k", int, "keep the k likeliest tokens (0: off)", 0),
    SamplerOption("top_p", "top_p", float, "nucleus sampling mass (1: off)", 0.0, 1.0, low_open=True, note="1: off"),
    SamplerOption("guidance_scale", "guidance", float, "classifier-free guidance scale (1: off)",
                  note="classifier-free guidance scale, 1: off"),
    SamplerOption("tokens_per_step", "tokens_per_step", int, "confidence sampler: tokens unmasked per step", 1),
    SamplerOption("block_size", "block_size", int,
                  "masked samplers: decode blocks of this many positions left to right (semi-autoregressive)", 1),
    SamplerOption("cache", "cache", str, "masked samplers, built-in transformer: none, prefix or dual (Fast-dLLM)",
                  choices=("none", "prefix", "dual")),
    SamplerOption("threshold", "threshold", float, "threshold sampler: commit every position this confident",
                  0.0, 1.0, low_open=True),
    SamplerOption("factor", "factor", float, "threshold sampler: Fast-dLLM's factor rule instead of the threshold",
                  0.0, low_open=True),
    SamplerOption("confidence", "confidence", str, "confidence / threshold samplers: prob, margin or entropy",
                  choices=("prob", "margin", "entropy")),
    SamplerOption("remasking", "remasking", str, "confidence sampler: low_confidence or random",
                  choices=("low_confidence", "random")),
    SamplerOption("text_end", "text_end", str,
                  "confidence / threshold samplers, where a text ends: drawn (from the model's end-of-text "
                  "probabilities at each block's first call, before the block's words), frontier (an end only "
                  "when the rule picks it at the first masked position) or auto (frontier for a run trained on "
                  "padded rows with --confidence prob, else drawn)", choices=("auto", "drawn", "frontier")),
    SamplerOption("eta", "eta", float, "ddim sampler: 0 deterministic ... 1 as noisy as ddpm", 0.0, 1.0,
                  note="0: deterministic ddim, 1: as noisy as ddpm"),
    SamplerOption("clamp", "clamp", bool, "ddpm/ddim samplers: snap each x0 estimate to the nearest token embedding"),
)}

# DiffusionLM.sample's argument -> the sampler option it sets.
OPTION_OF_ARGUMENT = {o.argument: o.name for o in SAMPLER_OPTIONS.values()}


def check_option(option: SamplerOption, value: Any) -> None:
    """Raise ArgumentError (naming the argument) for a value of the wrong type or out of range."""
    from ..checks import check_int, check_number
    from ..errors import ArgumentError, literal

    if value is None:
        return
    if option.choices is not None:
        if value not in option.choices:
            raise ArgumentError("{arg} must be one of " + literal(", ".join(option.choices)) + ", got "
                                + literal(repr(value)), arg=option.argument)
    elif option.type is int:
        check_int(option.argument, value, option.low)
    elif option.type is float:
        check_number(option.argument, value, option.low, option.high, low_open=option.low_open,
                     note=option.note)
    elif option.type is bool and not isinstance(value, bool):
        raise ArgumentError("{arg} must be true or false, got " + literal(repr(value)), arg=option.argument)
