"""Backbones: networks from tokens (and time, labels) to logits. They know no diffusion."""
from __future__ import annotations

from ..config import ModelConfig
from ..errors import ConfigError
from .presets import PRESETS
from .transformer import Transformer, TransformerSpec


def resolve_model_config(cfg: ModelConfig, seq_len: int, causal: bool) -> ModelConfig:
    """Fill every size left null from the preset, `max_seq_len` from the data and `causal` from the method."""
    if cfg.backbone != "transformer":
        raise ConfigError(f"unknown backbone '{cfg.backbone}'; the built-in one is 'transformer'")
    preset = PRESETS[cfg.preset]
    values = {k: getattr(cfg, k) if getattr(cfg, k) is not None else v for k, v in preset.items()}
    max_len = cfg.max_seq_len or seq_len
    if max_len < seq_len:
        raise ConfigError(f"model.max_seq_len {max_len} is shorter than data.seq_len {seq_len}; raise it or leave it null")
    if cfg.causal is not None and cfg.causal != causal:
        raise ConfigError(f"model.causal={cfg.causal} does not suit this method (it needs causal={causal}); leave it null")
    from dataclasses import replace

    return replace(cfg, **values, max_seq_len=max_len, causal=causal)


def build_backbone(cfg: ModelConfig, vocab_size: int) -> Transformer:
    """A backbone from a resolved ModelConfig (see `resolve_model_config`)."""
    spec = TransformerSpec(
        vocab_size=vocab_size, max_seq_len=cfg.max_seq_len, d_model=cfg.d_model, n_layers=cfg.n_layers,
        n_heads=cfg.n_heads, mlp_hidden=cfg.mlp_hidden, causal=bool(cfg.causal),
        time_conditioning=cfg.time_conditioning, num_classes=cfg.num_classes, qk_norm=cfg.qk_norm,
    )
    return Transformer(spec)


__all__ = ["PRESETS", "Transformer", "TransformerSpec", "build_backbone", "resolve_model_config"]
