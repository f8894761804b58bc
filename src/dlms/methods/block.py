"""Block diffusion (BD3-LM): masked diffusion inside blocks, autoregressive across them.

A row of L tokens is cut into blocks of `block_size`. The likelihood factorises over blocks,
log p(x) = sum_b log p(x^b | x^{<b}), and each factor is bounded by the masked-diffusion ELBO of
block b with the earlier blocks clean. Every block gets its own time t_b, so the bound is

    sum_b E_{t_b} [ w(t_b) * sum_{masked l in b} -log p(x0_l | x_t^b, x0^{<b}) ].

Vectorised training (the two-copy trick): one forward over concat(x_t, x0), [B, 2L], both copies
at positions 0..L-1, with an attention mask under which an x_t token of block b sees the x_t
tokens of block b and the x0 tokens of blocks < b, and an x0 token of block b sees the x0 tokens
of blocks <= b. So all blocks are scored in one pass. At sampling the earlier blocks are
already clean, and one forward over a single copy under `attention_mask` is exact.
"""
from __future__ import annotations

import math

import torch

from ..backbones import backbone_kind
from ..config import RunConfig
from ..errors import ConfigError
from ..method_options import BlockOptions
from .base import SpecialTokens, unwrap
from .masked import MaskedDiffusion


class BlockDiffusion(MaskedDiffusion):
    """Shares the schedule, t_min, SUBS and `loss` (its normalisation) with MaskedDiffusion;
    differs in one time per block and the block-causal attention of the two-copy forward."""

    name = "block"
    options = BlockOptions
    causal = False  # bidirectional backbone: the block structure comes from the attention mask
    default_sampler = "confidence"
    # Samples may be longer than the training length: blocks are decoded left to right, each
    # attending to the ones before it, as an AR model reads its prefix.
    extends_past_training_length = True
    stochastic_bound = True
    supports_discrete_bound = True  # the T-step bound, block by block
    needs_attention_mask = True  # the two-copy forward's `positions` and `attn_mask`
    # The prompt hook (methods/base.py): `maskable` holds the prompt clean in the noisy copy too,
    # so a block it shares with the response sees it as a sampler's fixed prompt.
    trains_on_responses = True
    # Prompt dropout (methods/base.py): `loss` (MaskedDiffusion's) masks a dropped prompt in both
    # copies, so the blocks after it see it masked, as the samplers' unconditional branch shows it.
    drops_prompts = True

    def __init__(self, cfg: BlockOptions, special: SpecialTokens):
        super().__init__(cfg, special)
        if cfg.block_size < 1:
            raise ConfigError(f"method.block_size must be at least 1, got {cfg.block_size}")
        self.block_size = cfg.block_size
        self.decoding_block = cfg.block_size

    @classmethod
    def check_run_config(cls, cfg: RunConfig) -> None:
        """One-line ConfigErrors for a run this method cannot train (called by assembly's
        backbone_tokenizer, before any data work, and resolve_run_config, once seq_len is known)."""
        if not backbone_kind(cfg.model.backbone).takes_attention_mask:
            raise ConfigError(f"method 'block' needs the built-in backbone (it passes an attention mask a Hugging "
                              f"Face model does not take), got model.backbone={cfg.model.backbone!r}; "
                              f"set model.backbone=transformer or use method.name=masked")
        seq_len = cfg.data.seq_len
        if seq_len is not None and cfg.method.block_size > seq_len:
            raise ConfigError(f"method.block_size {cfg.method.block_size} is longer than data.seq_len {seq_len}; "
                              f"set method.block_size to at most {seq_len}")

    # ------------------------------------------------------------------ attention
    def _blocks(self, length: int, device: torch.device) -> torch.Tensor:
        """Block index of each position: [length] long."""
        return torch.arange(length, device=device) // self.block_size

    def num_blocks(self, length: int) -> int:
        return math.ceil(length / self.block_size)

    def attention_mask(self, length: int, device: torch.device) -> torch.Tensor:
        """Sampling on one copy: bool [length, length], True where a token in block b may attend
        (any token of blocks <= b)."""
        blk = self._blocks(length, device)
        return blk[:, None] >= blk[None, :]

    def training_mask(self, length: int, device: torch.device) -> torch.Tensor:
        """The two-copy mask: bool [2L, 2L] over concat(x_t, x0), L = `length`."""
        blk = self._blocks(length, device)
        same = blk[:, None] == blk[None, :]
        earlier = blk[:, None] > blk[None, :]
        upto = blk[:, None] >= blk[None, :]
        # Rows x_t: own block of x_t, earlier blocks of x0. Rows x0: x0 up to its own block,
        # never x_t (so the clean copy's states are what a clean prefix gives at sampling).
        top = torch.cat([same, earlier], 1)
        bottom = torch.cat([torch.zeros_like(upto), upto], 1)
        return torch.cat([top, bottom], 0)

    # ------------------------------------------------------------------ noise
    def sample_block_times(self, batch: int, blocks: int, device: torch.device,
                           discrete_steps: int | None = None) -> torch.Tensor:
        """t [B, n_blocks]: each block its own time in [t_min, 1] (on the grid i / T with
        `discrete_steps` T); stratified across the batch per block when cfg.antithetic."""
        u = torch.rand(batch, blocks, device=device)
        if self.cfg.antithetic:
            u = (u[:1] + torch.arange(batch, device=device)[:, None] / batch) % 1.0
        if discrete_steps is not None:
            return (torch.floor(u * discrete_steps) + 1.0) / discrete_steps
        return self.t_min + (1.0 - self.t_min) * u

    # ------------------------------------------------------------------ bound
    def sequence_nll(self, model, x0: torch.Tensor, labels: torch.Tensor | None = None,
                     t: torch.Tensor | None = None, u: torch.Tensor | None = None,
                     maskable: torch.Tensor | None = None, discrete_steps: int | None = None) -> torch.Tensor:
        """One Monte Carlo estimate of the block NELBO per sequence (nats): x0 [B, L] -> [B].

        `t`: [B] (the same time for every block of a row, as the evaluators pass it) or
        [B, n_blocks]; default: one draw per block. `u` [B, L]: uniforms of the masking.
        `maskable` bool [B, L]: positions noised (the rest held clean, like a prompt).
        `discrete_steps` T: the T-step bound per block; `t` must then lie on the grid i / T.
        """
        batch, length = x0.shape
        blocks = self.num_blocks(length)
        time_conditioned = self._time_conditioned(model)
        if t is None:
            t = self.sample_block_times(batch, 1 if time_conditioned else blocks, x0.device, discrete_steps)
        if t.dim() == 1:
            t = t[:, None]
        t = t.expand(batch, blocks)
        if time_conditioned and not bool((t == t[:, :1]).all()):
            # The backbone takes one time per row, so every block of a row must share it.
            raise ValueError("a time-conditioned backbone needs one t per row: pass t of shape [B]")
        t_pos = t[:, self._blocks(length, x0.device)]  # [B, L]
        if u is None:
            u = torch.rand(x0.shape, device=x0.device)
        masked = u < self.schedule.mask_prob(t_pos)
        if maskable is not None:
            masked &= maskable
        xt = torch.where(masked, torch.full_like(x0, self.special.mask), x0)
        nll = self._two_copy_nll(model, xt, x0, masked, t[:, 0] if time_conditioned else None, labels)  # [M]
        if discrete_steps is None:
            # (1 - t_min): each t_b is uniform on [t_min, 1], as in the masked method.
            per_pos = (1.0 - self.t_min) * self.schedule.elbo_weight(t_pos)
        else:
            per_pos = self.schedule.discrete_elbo_weight(t_pos, discrete_steps)
        per_seq = torch.zeros(batch, device=x0.device, dtype=torch.float32)
        return per_seq.index_add_(0, masked.nonzero()[:, 0], per_pos[masked].float() * nll)

    def _two_copy_nll(self, model, xt: torch.Tensor, x0: torch.Tensor, masked: torch.Tensor,
                      time: torch.Tensor | None, labels: torch.Tensor | None) -> torch.Tensor:
        """-log p(x0_l | x_t^b, x0^{<b}) at the masked positions: [M] float32, SUBS (no mask token)."""
        length = x0.shape[1]
        select = torch.cat([masked, torch.zeros_like(masked)], 1)  # logits at masked x_t positions only
        logits = model(torch.cat([xt, x0], 1), select=select, time=time, labels=labels,
                       positions=torch.arange(length, device=x0.device).repeat(2),
                       attn_mask=self.training_mask(length, x0.device)).float()
        logits[:, self.special.mask] = float("-inf")
        return -torch.log_softmax(logits, -1).gather(-1, x0[masked][:, None]).squeeze(-1)

    @staticmethod
    def _time_conditioned(model) -> bool:
        return bool(unwrap(model).spec.time_conditioning)
