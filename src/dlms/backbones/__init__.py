"""Backbones: networks from tokens (and time, labels) to logits. They know no diffusion.

`model.backbone` is chosen through `BACKBONES` (kinds.py): the built-in `transformer`, or any
folder or Hub id of a Hugging Face causal LM."""
from __future__ import annotations

from ..config import ModelConfig
from .huggingface import HFBackbone, HFSpec
from .kinds import BACKBONES, HUGGING_FACE, BackboneKind, backbone_kind
from .presets import PRESETS
from .transformer import Transformer, TransformerSpec


def resolve_model_config(cfg: ModelConfig, seq_len: int, causal: bool) -> ModelConfig:
    """Fill every size left null (from the preset, or the pretrained model's own), `max_seq_len`
    from the data and `causal` from the method."""
    return backbone_kind(cfg.backbone).resolve(cfg, seq_len, causal)


def build_backbone(cfg: ModelConfig, vocab_size: int, checkpoint=None) -> Transformer | HFBackbone:
    """A backbone from a resolved ModelConfig (see `resolve_model_config`).

    `checkpoint`: a checkpoint folder whose weights are loaded next; a pretrained backbone is
    then rebuilt from the architecture saved there instead of its pretrained folder or Hub id.
    """
    return backbone_kind(cfg.backbone).build(cfg, vocab_size, checkpoint)


__all__ = ["BACKBONES", "HUGGING_FACE", "PRESETS", "BackboneKind", "HFBackbone", "HFSpec", "Transformer",
           "TransformerSpec", "backbone_kind", "build_backbone", "resolve_model_config"]
