"""`dlms models check`: load the foundational models a DGLM config names and report them."""
from __future__ import annotations

import time
from typing import Any

from ..devices import resolve_device
from .config import DglmConfig
from .decoder_loading import load_decoder_for
from .encoder import load_sentence_encoder


def check_models(cfg: DglmConfig) -> list[dict[str, Any]]:
    """Load the sentence encoder and the AR decoder; one dict per model: role, name, kind,
    size (embedding width of the encoder, hidden size of the decoder), parameters, device,
    load_seconds. A model that cannot be loaded raises its one-line error."""
    device = resolve_device(cfg.device)
    rows = []
    start = time.perf_counter()
    encoder = load_sentence_encoder(cfg.sentence_encoder_model_name, device)
    rows.append({"role": "sentence_encoder", "name": cfg.sentence_encoder_model_name, "kind": "sentence-transformers",
                 "embedding_size": encoder.dim, "parameters": encoder.num_parameters, "device": str(device),
                 "load_seconds": round(time.perf_counter() - start, 2)})
    start = time.perf_counter()
    decoder = load_decoder_for("auto_regressive_model_name", cfg.auto_regressive_model_name, device)
    rows.append({"role": "auto_regressive_decoder", "name": cfg.auto_regressive_model_name, "kind": decoder.kind,
                 "hidden_size": decoder.hidden_size, "parameters": decoder.num_parameters, "device": str(device),
                 "load_seconds": round(time.perf_counter() - start, 2)})
    return rows


def format_rows(rows: list[dict[str, Any]]) -> str:
    """A short human-readable report, one line per model."""
    lines = []
    for r in rows:
        size = (f"embedding {r['embedding_size']}" if "embedding_size" in r else f"hidden {r['hidden_size']}")
        lines.append(f"{r['role']}: {r['name']} ({r['kind']}), {size}, {r['parameters'] / 1e6:.1f}M parameters, "
                     f"{r['device']}, loaded in {r['load_seconds']:.1f} s")
    return "\n".join(lines)

