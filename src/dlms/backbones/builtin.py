"""The built-in transformer as a backbone kind: its sizes from a preset, built from a ModelConfig."""
from __future__ import annotations

from dataclasses import replace

from ..config import ModelConfig
from ..errors import ConfigError
from .presets import PRESETS
from .transformer import Transformer, TransformerSpec

_STYLES = ("adaln", "film")  # model.time_conditioning_style


def resolve_transformer_config(cfg: ModelConfig, seq_len: int, causal: bool) -> ModelConfig:
    """Every size left null from the preset, `max_seq_len` from the data and `causal` from the method."""
    preset = PRESETS[cfg.preset]
    values = {k: getattr(cfg, k) if getattr(cfg, k) is not None else v for k, v in preset.items()}
    max_len = cfg.max_seq_len or seq_len
    if max_len < seq_len:
        raise ConfigError(f"model.max_seq_len {max_len} is shorter than data.seq_len {seq_len}; raise it or leave it null")
    if cfg.causal is not None and cfg.causal != causal:
        raise ConfigError(f"model.causal={cfg.causal} does not suit this method (it needs causal={causal}); leave it null")
    if cfg.time_conditioning_style not in _STYLES:
        raise ConfigError(f"model.time_conditioning_style must be one of {', '.join(map(repr, _STYLES))}, "
                          f"got {cfg.time_conditioning_style!r}")
    if values["d_model"] % values["n_heads"] or (values["d_model"] // values["n_heads"]) % 2:
        raise ConfigError(f"model.d_model ({values['d_model']}) must split into model.n_heads ({values['n_heads']}) "
                          "heads of an even width (rotary positions rotate pairs); e.g. d_model=128, n_heads=4")
    if cfg.skip_connections and values["n_layers"] < 2:
        raise ConfigError(f"model.skip_connections needs at least 2 layers, got n_layers={values['n_layers']}")
    return replace(cfg, **values, max_seq_len=max_len, causal=causal)


def build_transformer(cfg: ModelConfig, vocab_size: int, checkpoint=None) -> Transformer:
    """The built-in transformer of a resolved ModelConfig (`checkpoint` is not needed: its
    architecture is all in the config)."""
    spec = TransformerSpec(
        vocab_size=vocab_size, max_seq_len=cfg.max_seq_len, d_model=cfg.d_model, n_layers=cfg.n_layers,
        n_heads=cfg.n_heads, mlp_hidden=cfg.mlp_hidden, causal=bool(cfg.causal),
        time_conditioning=cfg.time_conditioning, num_classes=cfg.num_classes, qk_norm=cfg.qk_norm,
        skip_connections=cfg.skip_connections, time_conditioning_style=cfg.time_conditioning_style,
        input_dim=cfg.input_dim, token_table_dim=cfg.token_table_dim, dropout=cfg.dropout,
        attention_dropout=cfg.attention_dropout, embedding_dropout=cfg.embedding_dropout,
    )
    return Transformer(spec)
