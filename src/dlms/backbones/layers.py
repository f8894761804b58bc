"""Building blocks of the built-in transformer: RMSNorm, rotary positions, attention, SwiGLU."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """Root-mean-square norm over the last dimension, with a learned gain."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight.to(x.dtype), self.eps)


class Rotary(nn.Module):
    """Rotary position embeddings; tables are buffers so they follow `.to(device)`."""

    def __init__(self, head_dim: int, max_seq_len: int, base: float = 10000.0):
        super().__init__()
        self.head_dim, self.base = head_dim, base
        self.register_buffer("rotation", self._table(max_seq_len), persistent=False)

    def _table(self, max_seq_len: int, device: torch.device | None = None) -> torch.Tensor:
        inv_freq = 1.0 / (self.base ** (torch.arange(0, self.head_dim, 2, device=device).float() / self.head_dim))
        angles = torch.outer(torch.arange(max_seq_len, device=device).float(), inv_freq)  # [Lmax, Dh/2]
        # One complex multiply rotates each (even, odd) pair: 4x faster than stacking halves.
        return torch.polar(torch.ones_like(angles), angles)

    def extend(self, max_seq_len: int) -> None:
        """Allow positions up to `max_seq_len` (rotary positions have no weights to learn)."""
        if max_seq_len > self.rotation.shape[0]:
            self.rotation = self._table(max_seq_len, self.rotation.device)

    def forward(self, x: torch.Tensor, start: int = 0, positions: torch.Tensor | None = None) -> torch.Tensor:
        """x: [B, H, L, Dh] -> the same shape, rotated by position start..start+L-1, or by
        `positions` [L] when given (fp32 inside)."""
        length = x.shape[-2]
        last = start + length if positions is None else int(positions.max()) + 1
        if last > self.rotation.shape[0]:
            raise ValueError(f"sequence of {last} tokens exceeds max_seq_len {self.rotation.shape[0]}")
        table = self.rotation[start : start + length] if positions is None else self.rotation[positions]
        pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
        rotated = torch.view_as_real(pairs * table)
        return rotated.flatten(-2).to(x.dtype)


class KVCache:
    """Preallocated keys and values per layer for fast autoregressive decoding: each call's
    tokens are placed after the cached ones and see them all (and, among themselves, causally)."""

    def __init__(self, n_layers: int, batch: int, n_heads: int, max_len: int, head_dim: int,
                 device: torch.device, dtype: torch.dtype):
        shape = (batch, n_heads, max_len, head_dim)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layers)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layers)]
        self.length = 0  # tokens already stored (same for every layer)

    @property
    def start(self) -> int:
        """Position of the first token of the next call."""
        return self.length

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v ([B, H, L, Dh]) after the cached tokens; return all keys/values so far."""
        end = self.length + k.shape[2]
        self.keys[layer][:, :, self.length : end] = k
        self.values[layer][:, :, self.length : end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def attention_mask(self, length: int, keys: int, causal: bool, device: torch.device):
        """(bool mask [length, keys] or None, is_causal) for a call of `length` new tokens."""
        if self.length == 0:
            return None, causal
        if length == 1 or not causal:
            return None, False
        q_pos = torch.arange(self.length, self.length + length, device=device)[:, None]
        return q_pos >= torch.arange(keys, device=device)[None, :], False

    def advance(self, length: int) -> None:
        self.length += length


class CanvasCache:
    """Keys and values of a whole canvas of `length` positions, per layer, for decoding a
    bidirectional model one window at a time (Fast-dLLM's prefix and dual caches, and the
    exact cache of a block-diffusion model).

    A call over the whole canvas (`window = (0, length)`) fills every position. A later call over
    a window `(start, end)` takes the tokens x[:, start:end], writes their fresh keys and values
    over the window's old ones, and attends to every stored position (`see_ahead`, the ordinary
    bidirectional model: the positions outside the window are a step or a block old), or only to
    positions before `end` (a model whose attention is causal across blocks).
    """

    def __init__(self, n_layers: int, batch: int, n_heads: int, length: int, head_dim: int,
                 device: torch.device, dtype: torch.dtype, see_ahead: bool = True):
        shape = (batch, n_heads, length, head_dim)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layers)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layers)]
        self.length = length
        self.see_ahead = see_ahead
        self.window = (0, length)
        # For the next call only: each query's first invisible key position ([end - start] long),
        # so that one call can hold several blocks of a block-causal model (None: no limit).
        self.visible_until: torch.Tensor | None = None

    @property
    def start(self) -> int:
        return self.window[0]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        start, end = self.window
        if k.shape[2] != end - start:
            raise ValueError(f"{k.shape[2]} tokens for a cache window of {end - start} ({start}..{end})")
        self.keys[layer][:, :, start:end] = k
        self.values[layer][:, :, start:end] = v
        stop = self.length if self.see_ahead else end
        return self.keys[layer][:, :, :stop], self.values[layer][:, :, :stop]

    def attention_mask(self, length: int, keys: int, causal: bool, device: torch.device):
        if causal:
            raise ValueError("a CanvasCache serves bidirectional models; a causal model decodes with a KVCache")
        if self.visible_until is None:
            return None, False
        return torch.arange(keys, device=device)[None, :] < self.visible_until[:, None], False

    def advance(self, length: int) -> None:
        """Nothing to do: the window says where the tokens go."""

    def keep_rows(self, rows: torch.Tensor) -> None:
        """Keep only the batch rows `rows` (long [B']), e.g. when finished samples leave the batch."""
        self.keys = [k[rows] for k in self.keys]
        self.values = [v[rows] for v in self.values]


class Attention(nn.Module):
    """Multi-head self-attention with QK-norm and rotary positions, via PyTorch SDPA."""

    def __init__(self, d_model: int, n_heads: int, rotary: Rotary, causal: bool, qk_norm: bool,
                 dropout: float = 0.0):
        super().__init__()
        self.dropout = dropout  # on the attention weights, in training only
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.causal = causal
        self.rotary = rotary
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)
        # QK-norm keeps attention logits bounded; it shortens the masked-loss plateau.
        self.q_norm = RMSNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = RMSNorm(self.head_dim) if qk_norm else nn.Identity()

    def forward(self, x: torch.Tensor, cache: KVCache | CanvasCache | None = None, layer: int = 0,
                positions: torch.Tensor | None = None, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: [B, L, D] -> [B, L, D]. `positions` [L]: each token's position (default 0..L-1, or
        after the cached ones); `attn_mask` bool [L, L] (True: may attend), replacing the causal
        or full pattern (not with a cache)."""
        b, length, d = x.shape
        q, k, v = self.qkv(x).view(b, length, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        start = cache.start if cache is not None else 0
        q = self.rotary(self.q_norm(q), start, positions)
        k = self.rotary(self.k_norm(k), start, positions)
        mask, is_causal = attn_mask, self.causal and attn_mask is None
        if cache is not None:
            if attn_mask is not None:
                raise ValueError("attn_mask cannot be combined with a cache")
            k, v = cache.update(layer, k, v)
            mask, is_causal = cache.attention_mask(length, k.shape[2], self.causal, x.device)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(b, length, d))


class SwiGLU(nn.Module):
    """Gated MLP: down(silu(gate(x)) * up(x))."""

    def __init__(self, d_model: int, hidden: int):
        super().__init__()
        self.gate_up = nn.Linear(d_model, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)
