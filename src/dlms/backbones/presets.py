"""Named sizes of the built-in transformer."""
from __future__ import annotations

PRESETS: dict[str, dict[str, int]] = {
    # for tests: runs in milliseconds
    "tiny": {"d_model": 64, "n_layers": 2, "n_heads": 2, "mlp_hidden": 176},
    # for the CPU demo: ~1M parameters (plus embeddings), ~20k tokens/s on 2 CPU cores
    "small": {"d_model": 128, "n_layers": 4, "n_heads": 4, "mlp_hidden": 344},
    # GPT-2-small-like, for GPUs
    "base": {"d_model": 768, "n_layers": 12, "n_heads": 12, "mlp_hidden": 2048},
}
