"""DGLM's latent diffusion model: the (standardised) sentence embedding of a continuation, given
the embedding of its prefix.

- The D-wide embedding is cut into K pseudo-tokens of width D / K. The denoiser is the built-in
  transformer (bidirectional, time-conditioned) over 2K positions: the K prefix tokens, then
  the K noisy tokens. A dropped prefix is replaced by a learned null prefix (classifier-free
  guidance), with probability `cond_drop_prob` in training.
- Variance-preserving process with the cosine log-SNR schedule of `dlms.schedules`;
  v-prediction: the network predicts v = alpha eps - sigma x, so x_hat = alpha z - sigma v_hat.
- Sampling reuses the gaussian samplers' DDPM and DDIM updates (`dlms.samplers.gaussian`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from ..backbones.transformer import Transformer, TransformerSpec
from ..config import dataclass_from_dict
from ..data.cache import staged_entry
from ..errors import CheckpointError, ConfigError
from ..checkpoint import load_weights, read_tensors
from ..samplers.gaussian import ddim_update, ddpm_update, vp_coefficients
from ..samplers.guidance import mix_guidance
from ..schedules import GaussianSchedule, build_schedule
from .embeddings import Standardizer
from .stages import read_stage_meta, write_stage_meta, write_training_state

STAGE = "latent_diffusion"  # written into the stage's config.json


@dataclass
class LatentDiffusionConfig:
    num_pseudo_tokens: int = 8  # K: the embedding is cut into K pieces of width D / K
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 4
    mlp_hidden: int = 688
    schedule: str = "logsnr-cosine"
    cond_drop_prob: float = 0.1  # share of training pairs whose prefix is replaced by the null prefix


class LatentDenoiser(nn.Module):
    """v-prediction network: noisy x_t [B, D], t [B], prefix embedding [B, D] (rows with
    `drop` True use the null prefix) -> v_hat [B, D]."""

    def __init__(self, embed_dim: int, cfg: LatentDiffusionConfig):
        super().__init__()
        k = cfg.num_pseudo_tokens
        if k < 1 or embed_dim % k:
            raise ConfigError(f"num_pseudo_tokens {k} must divide the encoder's embedding width {embed_dim}; "
                              f"choose a divisor of {embed_dim}")
        self.embed_dim, self.k, self.piece = embed_dim, k, embed_dim // k
        self.cfg = cfg
        spec = TransformerSpec(vocab_size=1, max_seq_len=2 * k, d_model=cfg.d_model, n_layers=cfg.n_layers,
                               n_heads=cfg.n_heads, mlp_hidden=cfg.mlp_hidden, causal=False, time_conditioning=True)
        self.net = Transformer(spec)
        self.prefix_in = nn.Linear(self.piece, cfg.d_model)
        self.noisy_in = nn.Linear(self.piece, cfg.d_model)
        self.null_prefix = nn.Parameter(torch.zeros(k, cfg.d_model))
        self.out = nn.Linear(cfg.d_model, self.piece)
        nn.init.zeros_(self.out.weight)  # start by predicting v = 0
        nn.init.zeros_(self.out.bias)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, prefix: torch.Tensor,
                drop: torch.Tensor | None = None) -> torch.Tensor:
        batch = x_t.shape[0]
        for name, x in (("x_t", x_t), ("prefix", prefix)):
            if x.shape[-1] != self.embed_dim:
                raise ConfigError(f"{name} has width {x.shape[-1]}, but this model was trained on an encoder of "
                                  f"width {self.embed_dim}; use the same sentence encoder")
        pre = self.prefix_in(prefix.view(batch, self.k, self.piece))
        if drop is not None:
            pre = torch.where(drop[:, None, None], self.null_prefix.expand(batch, -1, -1), pre)
        noisy = self.noisy_in(x_t.view(batch, self.k, self.piece))
        hidden = self.net.hidden(inputs_embeds=torch.cat([pre, noisy], dim=1), time=t)
        return self.out(hidden[:, self.k:]).reshape(batch, self.embed_dim)


class LatentDiffusion:
    """The process, loss and samplers around a `LatentDenoiser`; embeddings are standardised [B, D]."""

    def __init__(self, denoiser: LatentDenoiser):
        self.denoiser = denoiser
        self.schedule = build_schedule(denoiser.cfg.schedule)
        if not isinstance(self.schedule, GaussianSchedule):
            raise ConfigError(f"schedule '{denoiser.cfg.schedule}' is not a gaussian schedule; use logsnr-cosine")

    def loss(self, x0: torch.Tensor, prefix: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean squared error of v over a batch: x0, prefix [B, D] (standardised)."""
        batch = x0.shape[0]
        t = torch.rand(batch, generator=generator, device=x0.device)
        eps = torch.randn(x0.shape, generator=generator, device=x0.device)
        alpha, sigma = self.schedule.alpha(t)[:, None], self.schedule.sigma(t)[:, None]
        drop = torch.rand(batch, generator=generator, device=x0.device) < self.denoiser.cfg.cond_drop_prob
        v_hat = self.denoiser(alpha * x0 + sigma * eps, t, prefix, drop)
        return F.mse_loss(v_hat, alpha * eps - sigma * x0)

    def x0_estimate(self, z: torch.Tensor, t: torch.Tensor, prefix: torch.Tensor, guidance_scale: float = 1.0,
                    drop: torch.Tensor | None = None) -> torch.Tensor:
        """x_hat [B, D] from z_t; guidance_scale != 1 mixes the conditional and null-prefix predictions."""
        if guidance_scale == 1.0:
            v = self.denoiser(z, t, prefix, drop)
        else:
            batch = z.shape[0]
            both = self.denoiser(torch.cat([z, z]), t.repeat(2), torch.cat([prefix, prefix]),
                                 torch.cat([torch.zeros(batch, dtype=torch.bool, device=z.device),
                                            torch.ones(batch, dtype=torch.bool, device=z.device)]))
            cond, uncond = both.chunk(2)
            v = mix_guidance(cond, uncond, guidance_scale)
        alpha, sigma = self.schedule.alpha(t)[:, None], self.schedule.sigma(t)[:, None]
        return alpha * z - sigma * v

    @torch.no_grad()
    def sample(self, prefix: torch.Tensor, num_steps: int = 50, sampler: str = "ddim", eta: float = 0.0,
               guidance_scale: float = 1.0, generator: torch.Generator | None = None,
               noise: torch.Tensor | None = None, control=None, control_scale: float = 0.0) -> torch.Tensor:
        """Standardised continuation embeddings [B, D] for prefix embeddings [B, D].

        `control`: a function x_hat [B, D] -> gradient [B, D] (see `control.guidance_gradient`);
        every step moves the clean estimate by control_scale x that gradient before the update."""
        if sampler not in ("ddim", "ddpm"):
            raise ConfigError(f"unknown latent sampler '{sampler}'; choose ddim or ddpm")
        z = torch.randn(prefix.shape, generator=generator, device=prefix.device) if noise is None else noise.clone()
        times = torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float64).tolist()
        x_hat = z
        for i in range(num_steps):
            t, s = times[i], times[i + 1]
            x_hat = self.x0_estimate(z, torch.full((z.shape[0],), t, device=z.device), prefix, guidance_scale)
            if control is not None and control_scale:
                with torch.enable_grad():
                    x_hat = x_hat + control_scale * control(x_hat)
            coefficients = vp_coefficients(self.schedule, t, s)
            z = (ddim_update(z, x_hat, coefficients, eta, generator) if sampler == "ddim"
                 else ddpm_update(z, x_hat, coefficients, generator))
        return x_hat


def save_latent_stage(folder: str | Path, diffusion: LatentDiffusion, standardizer: Standardizer,
                      progress: dict | None = None, optimizer_state: dict | None = None) -> Path:
    """Write the stage atomically: config.json (stage, embed_dim, config), model.safetensors,
    the standardisation statistics (standardizer.safetensors) and, during training, its
    progress and optimizer state. An existing folder is replaced only once the new one is complete."""
    folder = Path(folder)
    with staged_entry(folder, replace=True) as tmp:
        model = diffusion.denoiser
        save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()},
                  str(tmp / "model.safetensors"))
        standardizer.save(tmp / "standardizer.safetensors")
        write_stage_meta(tmp, STAGE, embed_dim=model.embed_dim, config=asdict(model.cfg))
        write_training_state(tmp, progress, optimizer_state)
    return folder


def load_latent_stage(folder: str | Path) -> tuple[LatentDiffusion, Standardizer]:
    """(the latent diffusion model, its standardizer) from a folder written by `save_latent_stage`;
    a missing, damaged or other-stage folder is a CheckpointError."""
    folder = Path(folder)
    meta = read_stage_meta(folder, STAGE, "latent diffusion")
    try:
        cfg = dataclass_from_dict(LatentDiffusionConfig, meta.get("config", {}), "config")
        model = LatentDenoiser(int(meta["embed_dim"]), cfg)
    except (ConfigError, KeyError, TypeError, ValueError) as exc:
        first = f"no {exc}" if isinstance(exc, KeyError) else str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"latent diffusion stage '{folder}' is damaged (its config.json: {first}); "
                              "retrain the diffusion stage") from None
    load_weights(model, read_tensors(folder / "model.safetensors"), folder / "model.safetensors")
    return LatentDiffusion(model.eval()), Standardizer.load(folder / "standardizer.safetensors")
