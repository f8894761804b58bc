"""The kinds of backbone `model.backbone` names, chosen through a registry like methods and samplers.

A registered name (`transformer`, the built-in network) is its own kind; any other value is a
folder or Hub id of a Hugging Face causal LM and goes to the Hugging Face wrapper. What the rest of
dlms needs to know of a kind is declared on it (`pretrained`, `takes_attention_mask`), never
guessed from the name.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from torch import nn

from ..config import ModelConfig
from ..registry import Registry
from .builtin import build_transformer, resolve_transformer_config
from .huggingface import build_hf_backbone, load_hf_config, resolve_hf_model_config


@dataclass(frozen=True)
class BackboneKind:
    """One kind of backbone: how its ModelConfig is resolved and how it is built."""

    name: str
    # Its sizes, weights and tokenizer come from a pretrained Hugging Face model (a folder or Hub id).
    pretrained: bool
    # forward() takes `positions` and an `attn_mask` (block diffusion's two-copy pass needs them).
    takes_attention_mask: bool
    # (cfg, data seq_len, the method's causality) -> cfg with every size, max_seq_len and causal filled.
    resolve: Callable[[ModelConfig, int, bool], ModelConfig]
    # (resolved cfg, vocabulary size, checkpoint folder whose weights go in next, or None) -> the network.
    build: Callable[[ModelConfig, int, str | Path | None], nn.Module]
    # (resolved cfg) -> the width of its input embeddings (d_model).
    embedding_width: Callable[[ModelConfig], int]


def _hf_embedding_width(cfg: ModelConfig) -> int:
    return int(load_hf_config(cfg.backbone).hidden_size)


BACKBONES: Registry[BackboneKind] = Registry("backbone")
BACKBONES.register("transformer")(BackboneKind(
    name="transformer", pretrained=False, takes_attention_mask=True, resolve=resolve_transformer_config,
    build=build_transformer, embedding_width=lambda cfg: int(cfg.d_model)))

# Not registered: what every other value of model.backbone (a folder or a Hub id) names.
HUGGING_FACE = BackboneKind(
    name="huggingface", pretrained=True, takes_attention_mask=False, resolve=resolve_hf_model_config,
    build=build_hf_backbone, embedding_width=_hf_embedding_width)


def backbone_kind(backbone: str) -> BackboneKind:
    """The kind of `model.backbone`: a registered name's, else the Hugging Face wrapper's."""
    return BACKBONES.get(backbone) if backbone in BACKBONES else HUGGING_FACE
