"""Tiny runs of every family for the server's tests: masked and ar (shared with the rest of the
suite), gaussian and block trained here, and a labelled masked run."""
from __future__ import annotations

import pytest

from tests.conftest import tiny_overrides


@pytest.fixture(scope="session")
def serving_runs(trained_runs, tmp_path_factory) -> dict:
    from dlms.cli import main

    runs = dict(trained_runs)
    for name, method, extra in (("gaussian", "gaussian", {}), ("block", "block", {"method.block_size": 8}),
                                ("labelled", "masked", {"data.label_column": "sentiment"})):
        out = tmp_path_factory.mktemp(f"serve-{name}")
        assert main(["train", "--samples", "0", *tiny_overrides(out, method, **extra)]) == 0
        runs[name] = out
    return runs


@pytest.fixture(scope="session")
def engines(serving_runs) -> dict:
    from dlms.serving import load_engine

    return {name: load_engine(name, str(path), "cpu") for name, path in serving_runs.items()}
