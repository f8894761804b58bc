"""The built-in transformer backbone.

Token ids (or embeddings), an optional diffusion time and optional class labels in; hidden
states or logits out. It knows nothing of noise, losses or sampling loops.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .conditioning import AdaptiveModulation, Conditioner
from .layers import Attention, CanvasCache, KVCache, RMSNorm, Rotary, SwiGLU


@dataclass(frozen=True)
class TransformerSpec:
    """Resolved sizes and switches of one transformer."""

    vocab_size: int
    max_seq_len: int
    d_model: int
    n_layers: int
    n_heads: int
    mlp_hidden: int
    causal: bool
    time_conditioning: bool = False
    num_classes: int = 0
    qk_norm: bool = True
    skip_connections: bool = False  # U-ViT long skips between mirrored early and late blocks
    time_conditioning_style: str = "adaln"  # "adaln" or "film"; used only when conditioned
    input_dim: int = 0  # >0: inputs_embeds [B, L, input_dim] go through Linear(input_dim -> d_model)
    token_table_dim: int = 0  # >0: a second token table [V, token_table_dim] (`token_table`) for methods to use
    dropout: float = 0.0  # on each attention and MLP output before the residual add (training only)
    attention_dropout: float = 0.0  # on the attention weights (training only)
    embedding_dropout: float = 0.0  # on the input embeddings (training only)


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class Block(nn.Module):
    """Pre-norm block: x + attn(norm(x)), then x + mlp(norm(x)).

    When conditioned: adaptive norm ("adaln": shift, scale, gate around attn and mlp) or FiLM
    ("film": x * (1 + scale) + shift on the block's output). With `skip_in` (a late block of a
    U-ViT backbone) the input is first Linear(2D -> D)(concat(x, skip)).
    """

    def __init__(self, spec: TransformerSpec, rotary: Rotary, conditioned: bool, skip_in: bool = False):
        super().__init__()
        self.skip = nn.Linear(2 * spec.d_model, spec.d_model, bias=False) if skip_in else None
        self.norm1 = RMSNorm(spec.d_model)
        self.attn = Attention(spec.d_model, spec.n_heads, rotary, spec.causal, spec.qk_norm, spec.attention_dropout)
        self.norm2 = RMSNorm(spec.d_model)
        self.mlp = SwiGLU(spec.d_model, spec.mlp_hidden)
        self.drop = nn.Dropout(spec.dropout)  # the identity at p = 0 and in eval mode
        self.film = spec.time_conditioning_style == "film"
        self.modulation = AdaptiveModulation(spec.d_model, 2 if self.film else 6) if conditioned else None

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None, cache: KVCache | CanvasCache | None, layer: int,
                skip: torch.Tensor | None = None, positions: torch.Tensor | None = None,
                attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.skip is not None:
            x = self.skip(torch.cat([x, skip], dim=-1))
        attend = dict(positions=positions, attn_mask=attn_mask)
        if self.modulation is None or self.film:
            x = x + self.drop(self.attn(self.norm1(x), cache, layer, **attend))
            x = x + self.drop(self.mlp(self.norm2(x)))
            if self.modulation is None:
                return x
            scale, shift = self.modulation(cond)
            return _modulate(x, shift, scale)
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(cond)
        x = x + (1 + gate1) * self.drop(self.attn(_modulate(self.norm1(x), shift1, scale1), cache, layer, **attend))
        return x + (1 + gate2) * self.drop(self.mlp(_modulate(self.norm2(x), shift2, scale2)))


class Transformer(nn.Module):
    """Rotary, RMSNorm, QK-norm, SwiGLU, SDPA attention, tied input/output embeddings."""

    def __init__(self, spec: TransformerSpec):
        super().__init__()
        if spec.d_model % spec.n_heads:
            raise ValueError(f"d_model {spec.d_model} is not divisible by n_heads {spec.n_heads}")
        self.spec = spec
        self.embed = nn.Embedding(spec.vocab_size, spec.d_model)
        self.embed_drop = nn.Dropout(spec.embedding_dropout)
        # Inputs wider than d_model (e.g. gaussian diffusion's [x_t, x0 estimate, flag]) are projected.
        self.input_proj = nn.Linear(spec.input_dim, spec.d_model) if spec.input_dim > 0 else None
        # A method's own token vectors (gaussian: the diffusion space), trained with the network.
        self.token_table = nn.Embedding(spec.vocab_size, spec.token_table_dim) if spec.token_table_dim > 0 else None
        self.conditioned = spec.time_conditioning or spec.num_classes > 0
        self.conditioner = Conditioner(spec.d_model, spec.time_conditioning, spec.num_classes) if self.conditioned else None
        if spec.time_conditioning_style not in ("adaln", "film"):
            raise ValueError(f"time_conditioning_style must be 'adaln' or 'film', got {spec.time_conditioning_style!r}")
        rotary = Rotary(spec.d_model // spec.n_heads, spec.max_seq_len)
        # U-ViT: the outputs of the first n//2 blocks feed the last n//2 (block i -> block n-1-i).
        self.n_skips = spec.n_layers // 2 if spec.skip_connections else 0
        self.blocks = nn.ModuleList(Block(spec, rotary, self.conditioned, skip_in=i >= spec.n_layers - self.n_skips)
                                    for i in range(spec.n_layers))
        self.final_norm = RMSNorm(spec.d_model)
        self.final_modulation = AdaptiveModulation(spec.d_model, 2) if self.conditioned else None
        self.activation_checkpointing = False
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for name, param in self.named_parameters():
            if param.dim() == 2 and "modulation" not in name:
                nn.init.normal_(param, std=0.02)
        # Residual outputs scaled down with depth (GPT-2): keeps the initial stream variance flat.
        for block in self.blocks:
            nn.init.normal_(block.attn.out.weight, std=0.02 / (2 * self.spec.n_layers) ** 0.5)
            nn.init.normal_(block.mlp.down.weight, std=0.02 / (2 * self.spec.n_layers) ** 0.5)
            if block.skip is not None:
                # [identity | N(0, 0.02)]: the stream passes unchanged plus a small share of the skip,
                # so its scale is kept and gradients reach the early block through the skip from step 0.
                with torch.no_grad():
                    block.skip.weight[:, : self.spec.d_model].copy_(torch.eye(self.spec.d_model))

    def extend_positions(self, max_seq_len: int) -> None:
        """Accept sequences up to `max_seq_len` tokens, e.g. a decoder given soft prompts on top
        of the texts it was trained on; positions past the trained length need fine-tuning."""
        if max_seq_len > self.spec.max_seq_len:
            for module in self.modules():
                if isinstance(module, Rotary):
                    module.extend(max_seq_len)
            self.spec = replace(self.spec, max_seq_len=max_seq_len)

    @property
    def null_class(self) -> int:
        return self.spec.num_classes

    def shard_units(self) -> list[nn.Module]:
        """The modules FSDP shards one at a time: the blocks (training/parallel.py)."""
        return list(self.blocks)

    def enable_activation_checkpointing(self) -> None:
        """Training forwards keep only each block's input and recompute the block in backward."""
        self.activation_checkpointing = True

    supports_canvas_cache = True  # `new_canvas_cache`: window-at-a-time decoding of a bidirectional model

    def new_cache(self, batch: int, max_len: int, device: torch.device, dtype: torch.dtype) -> KVCache:
        s = self.spec
        return KVCache(s.n_layers, batch, s.n_heads, max_len, s.d_model // s.n_heads, device, dtype)

    def new_canvas_cache(self, batch: int, length: int, device: torch.device, dtype: torch.dtype,
                         see_ahead: bool = True) -> CanvasCache:
        """A cache of the keys and values of a whole canvas [batch, length] (see CanvasCache)."""
        s = self.spec
        return CanvasCache(s.n_layers, batch, s.n_heads, length, s.d_model // s.n_heads, device, dtype, see_ahead)

    def hidden(self, input_ids: torch.Tensor | None = None, *, inputs_embeds: torch.Tensor | None = None,
               time: torch.Tensor | None = None, labels: torch.Tensor | None = None,
               cache: KVCache | CanvasCache | None = None, positions: torch.Tensor | None = None,
               attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids [B, L] (or inputs_embeds [B, L, D]), time [B] in [0, 1], labels [B] -> hidden [B, L, D].

        With a KVCache (causal models) the tokens are placed after the cached ones; with a
        CanvasCache they are the cache's current window. `positions` [L] (long) and `attn_mask`
        bool [L, L] (True: may attend) override the positions 0..L-1 and the attention pattern,
        e.g. for a block-diffusion model that sees a noisy and a clean copy of one sequence.
        """
        x = self.embed(input_ids) if inputs_embeds is None else inputs_embeds
        if inputs_embeds is not None and x.shape[-1] != self.spec.d_model:
            if self.input_proj is None or x.shape[-1] != self.spec.input_dim:
                raise ValueError(f"inputs_embeds of width {x.shape[-1]}: this backbone takes {self.spec.d_model}"
                                 + (f" or {self.spec.input_dim}" if self.input_proj is not None else ""))
            x = self.input_proj(x)
        x = self.embed_drop(x)
        if labels is not None and self.spec.num_classes == 0:
            raise ValueError("labels were given but this backbone has no class conditioning (model.num_classes=0)")
        cond = None
        if self.conditioner is not None:
            cond = self.conditioner(time, labels, x.shape[0], x.device)
        skips: list[torch.Tensor] = []
        recompute = self.activation_checkpointing and self.training and cache is None and torch.is_grad_enabled()
        for i, block in enumerate(self.blocks):
            skip = skips.pop() if block.skip is not None else None
            if recompute:
                x = checkpoint(block, x, cond, cache, i, skip, positions, attn_mask, use_reentrant=False)
            else:
                x = block(x, cond, cache, i, skip, positions, attn_mask)
            if i < self.n_skips:
                skips.append(x)
        if cache is not None:
            cache.advance(x.shape[1])
        x = self.final_norm(x)
        if self.final_modulation is not None:
            shift, scale = self.final_modulation(cond)
            x = _modulate(x, shift, scale)
        return x

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [..., D] -> logits [..., V] through the tied embedding matrix."""
        return hidden @ self.embed.weight.t()

    def forward(self, input_ids: torch.Tensor | None = None, *, select: torch.Tensor | None = None,
                **kwargs) -> torch.Tensor:
        """Logits [B, L, V], or [M, V] at the positions where `select` [B, L] is True (the
        vocabulary projection is skipped elsewhere). See `hidden` for the other arguments."""
        hidden = self.hidden(input_ids, **kwargs)
        return self.logits(hidden if select is None else hidden[select])
