"""The options of gaussian diffusion over token embeddings: dlms/methods/gaussian.py."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from .base import MethodConfig


@dataclass
class GaussianOptions(MethodConfig):
    name: Literal["gaussian"] = "gaussian"
    # A name in dlms.schedules.SCHEDULES of the gaussian kind; auto: logsnr-cosine. Training
    # saves the resolved name.
    schedule: str = "auto"
    antithetic: bool = True  # stratified t across the batch: lower-variance loss
    freeze_embeddings: bool = False  # keep the token embeddings (the diffusion space) fixed
    # Share of training rows with a clean prompt prefix (the rest: unconditional); on
    # prompt/response data every row's prompt is held clean instead.
    prefix_prob: float = 0.5
    mse_weight: float = 1.0  # loss = cross-entropy + mse_weight * MSE of the x0 estimate
    # The norm of every clean token vector x0. Fixed (not sqrt(D)), so the noise levels where
    # tokens become identifiable do not move with the embedding width D.
    embedding_norm: float = 1.0
    # Width of the diffusion space. >0: a separate learned token table [V, embed_dim] (small, as
    # in Plaid: cheap to noise, to interpolate and to score against); 0: the backbone's own input
    # embeddings. null: 16 on the built-in transformer, 0 on a pretrained one; training saves the
    # width it used.
    embed_dim: Optional[int] = None
    # The log-SNR at t = 1 (almost pure noise) and at t = 0 (almost clean). A lower top keeps the
    # likelihood bound from paying SNR x the network's last bit of doubt on clean input.
    logsnr_min: float = -10.0
    logsnr_max: float = 10.0

    RANGES = (("prefix_prob", lambda v: 0 <= v <= 1, "in [0, 1]"),
              ("mse_weight", lambda v: v >= 0, "at least 0"),
              ("embedding_norm", lambda v: v > 0, "positive"),
              ("embed_dim", lambda v: v is None or v >= 0, "at least 0 (or null)"))
