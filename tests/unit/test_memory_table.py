"""scripts/memory_table.py: the activation formula against a measurement on a tiny Qwen2, and the
FSDP figures dividing with the world size as sharding says."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "memory_table.py"


@pytest.fixture(scope="module")
def mt():
    spec = importlib.util.spec_from_file_location("memory_table", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny(mt):
    config = mt.load_config(mt.TINY)
    return config, mt.architecture(config, "tiny")


@pytest.mark.parametrize("batch, seq_len", [(2, 64), (1, 24)])
@pytest.mark.parametrize("mode, setup, precision", [("fp32", "FSDP", "fp32"), ("bf16", "FSDP", "bf16"),
                                                    ("autocast", "DDP", "bf16")])
def test_activation_formula_matches_the_saved_tensors(mt, tiny, batch, seq_len, mode, setup, precision):
    config, arch = tiny
    a, r, c = mt.dtype_bytes(precision, setup)
    formula = (mt.activation_bytes(arch, batch, seq_len, a, r, c, checkpointing=False)
               + mt.logits_bytes(arch, batch, seq_len, 1.0, buffers=1))
    measured, copies = mt.measure_saved_bytes(config, batch, seq_len, mode)
    assert 0.75 < measured / formula < 1.25
    if mode == "autocast":  # autocast's bf16 weight copies: counted as parameters, not activations
        assert 0.9 < copies / (2 * arch.linear_params) <= 1.0
    else:
        assert copies == 0


@pytest.fixture(scope="module")
def small(mt):
    return mt.architecture(mt.load_config(mt.QWEN25_0_5B), "0.5B")


def test_parameters_are_counted_from_the_module(mt, small):
    """The published totals of the two models (0.49B, 7.61B), reached from their config fields alone."""
    big = mt.architecture(mt.load_config(mt.QWEN25_7B), "7B")
    assert small.params == 494_032_768 and big.params == 7_615_616_512
    # Tied: the 0.5B's embedding is its output head, counted once; the 7B has both.
    assert small.root_params == 151936 * 896 + 896
    assert big.root_params == 2 * 152064 * 3584 + 3584
    assert small.params == small.root_params + 24 * small.layer_params


def test_fsdp_state_divides_by_the_world_size(mt, small):
    rows = {n: mt.row(small, "FSDP", n, "bf16", False, 8, 2048, 1.0) for n in (1, 2, 8)}
    ddp = {n: mt.row(small, "DDP", n, "bf16", False, 8, 2048, 1.0) for n in (2, 8)}
    state = {n: sum(rows[n][k] for k in ("params", "grads", "optimizer")) for n in rows}
    assert state[2] == pytest.approx(state[1] / 2, abs=0.011) and state[8] == pytest.approx(state[1] / 8, abs=0.011)
    for n in (2, 8):  # the rest (gather transient, activations, logits) does not shrink
        assert rows[n]["total"] == pytest.approx(rows[1]["total"] - state[1] + state[n], abs=0.03)
        assert rows[n]["gather"] == rows[1]["gather"] > 0
    assert ddp[2]["total"] == ddp[8]["total"]  # DDP replicates: no gain from more devices


def test_checkpointing_keeps_block_inputs_only(mt, tiny):
    _, arch = tiny
    a, r, c = mt.dtype_bytes("bf16", "FSDP")
    full = mt.activation_bytes(arch, 4, 256, a, r, c, checkpointing=False)
    ckpt = mt.activation_bytes(arch, 4, 256, a, r, c, checkpointing=True)
    block = mt.block_bytes_per_token(arch, a, r, c) * 4 * 256
    assert full - ckpt == (arch.layers - 1) * block - arch.layers * r * arch.hidden * 4 * 256


@pytest.mark.parametrize("args", [["--batch_size", "0"], ["--world_sizes", "1,x"], ["--format", "csv"],
                                  ["--config", "/no/such/folder"], ["--scored_fraction", "0"]])
def test_a_bad_option_is_one_error_line(args):
    done = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and done.stderr.startswith("error: ")
