"""Shared fixtures: tiny runs trained once per test session on the built-in corpus."""
from __future__ import annotations

import os
from pathlib import Path

import pytest


def tiny_overrides(out_dir: Path, method: str = "masked", steps: int = 16, **extra) -> list[str]:
    """Dotted overrides for a run that trains in seconds."""
    values = {
        "method.name": method, "model.preset": "tiny", "data.builtin_examples": 400, "data.seq_len": 32,
        "data.vocab_size": 300, "train.batch_size": 8, "train.max_steps": steps, "train.warmup_steps": 2,
        "train.eval_every": 8, "train.eval_batches": 2, "train.save_every": 8, "train.log_every": 1,
        "train.progress": False, "train.out_dir": str(out_dir), "train.precision": "fp32",
        "sample.num_steps": 8, **extra,
    }
    return [f"{k}={v}" for k, v in values.items()]


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Tokenized data and tokenizers cached in a per-session folder, not the user's cache."""
    if "DLMS_CACHE_DIR" not in os.environ:
        os.environ["DLMS_CACHE_DIR"] = str(tmp_path_factory.mktemp("dlms-cache"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def trained_runs(tmp_path_factory) -> dict[str, Path]:
    """{'masked': run dir, 'ar': run dir}, each a tiny model trained through the CLI."""
    from dlms.cli import main

    runs = {}
    for method in ("masked", "ar"):
        out = tmp_path_factory.mktemp(f"run-{method}")
        assert main(["train", "--samples", "0", *tiny_overrides(out, method)]) == 0
        runs[method] = out
    return runs
