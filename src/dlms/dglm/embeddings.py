"""DGLM's semantic space on disk: cached sentence embeddings and their standardisation.

- `encode_cached(encoder, texts)`: the encoder's embeddings [N, D] float32, cached under
  `<cache_dir>/embeddings/<key>/` (key: the encoder's weights and the texts), written into a
  temporary folder and renamed into place, read back memory-mapped (no pickles).
- `Standardizer`: per-dimension mean and standard deviation [D]. The diffusion model works in
  standardised units (every dimension mean 0, variance 1, as a Gaussian process expects); the
  statistics are saved with a checkpoint as safetensors so that proposals map back exactly.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..data import cache
from ..errors import CheckpointError, DataError
from .encoder import SentenceEncoder

ARRAY_FILE = "embeddings.npy"


def encoder_fingerprint(encoder: SentenceEncoder) -> str:
    """sha256 over the encoder's parameter shapes and values: two encoders share cached
    embeddings only if their weights are the same."""
    digest = hashlib.sha256()
    for name, param in encoder.model.state_dict().items():
        digest.update(name.encode())
        digest.update(str(tuple(param.shape)).encode())
        digest.update(param.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


def texts_fingerprint(texts: list[str]) -> str:
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()


def encode_cached(encoder: SentenceEncoder, texts: list[str], cache_dir: str | Path | None = None,
                  batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
    """Embeddings [N, D] float32 (rows of norm 1) of `texts`, from the cache when present."""
    if not texts:
        raise DataError("no texts to encode; the data is empty")
    key = cache.cache_key({"kind": "sentence-embeddings", "encoder": encoder_fingerprint(encoder),
                           "texts": texts_fingerprint(texts), "count": len(texts)})
    entry = cache.entry_dir(cache_dir or cache.default_cache_dir(), "embeddings", key)
    if not cache.is_complete(entry):
        vectors = encoder.encode(texts, batch_size=batch_size, show_progress=show_progress)
        with cache.staged_entry(entry) as tmp:
            np.save(tmp / ARRAY_FILE, vectors, allow_pickle=False)
            cache.write_meta(tmp, {"encoder": encoder.name, "rows": len(texts), "dim": int(vectors.shape[1])})
    vectors = cache.load_array(entry / ARRAY_FILE)
    if vectors.shape != (len(texts), encoder.dim):
        raise DataError(f"cached embeddings in {entry} have shape {vectors.shape}, expected "
                        f"{(len(texts), encoder.dim)}; delete that folder and run again")
    return vectors


@dataclass
class Standardizer:
    """Per-dimension statistics of the embeddings: mean [D], std [D] (float32)."""

    mean: torch.Tensor
    std: torch.Tensor

    @classmethod
    def fit(cls, embeddings: np.ndarray | torch.Tensor, min_std: float = 1e-6) -> "Standardizer":
        x = torch.as_tensor(np.asarray(embeddings), dtype=torch.float64)
        if x.ndim != 2 or x.shape[0] < 2:
            raise DataError(f"standardisation needs at least 2 embeddings [N, D], got shape {tuple(x.shape)}")
        return cls(x.mean(0).float(), x.std(0).clamp_min(min_std).float())

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings [..., D] -> standardised [..., D]."""
        self._check(x)
        return (x - self.mean.to(x)) / self.std.to(x)

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """Standardised [..., D] -> embeddings [..., D]."""
        self._check(z)
        return z * self.std.to(z) + self.mean.to(z)

    def _check(self, x: torch.Tensor) -> None:
        if x.shape[-1] != self.dim:
            raise DataError(f"embeddings of width {x.shape[-1]} do not match this model's encoder (width {self.dim}); "
                            "use the sentence encoder the model was trained with")

    def save(self, path: str | Path) -> None:
        save_file({"mean": self.mean.contiguous(), "std": self.std.contiguous()}, str(path))

    @classmethod
    def load(cls, path: str | Path) -> "Standardizer":
        try:
            tensors = load_file(str(path))
            return cls(tensors["mean"], tensors["std"])
        except Exception as exc:  # noqa: BLE001  (safetensors raises several types for damaged files)
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise CheckpointError(f"standardisation statistics '{path}' are missing or damaged ({first}); "
                                  "retrain the embedding stage") from None
