"""Data-parallel training with two processes under torchrun (gloo on CPU)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import tiny_overrides


def test_two_process_training(tmp_path):
    run = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "dlms.cli", "train", "--samples", "0", *tiny_overrides(run, steps=6)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    state = json.loads((run / "checkpoint" / "trainer_state.json").read_text())
    assert state["world_size"] == 2 and state["step"] == 6
    # Only the main process logs: one line per step, no duplicates from the second rank.
    steps = [json.loads(l)["step"] for l in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in l]
    assert steps == list(range(1, 7))
    # Each optimizer step consumed one batch per rank: the data position advanced by 6, not 12.
    assert state["data"]["position"] == 6 or state["data"]["epoch"] > 0


def test_ranks_see_disjoint_data():
    """The loader shards every epoch between ranks without overlap (what DDP relies on)."""
    import numpy as np

    from dlms.data.loader import BatchIterator

    class Split:
        ids = np.arange(64 * 4, dtype=np.int32).reshape(64, 4)
        labels = None
        label_columns: list = []

        def __len__(self):
            return 64

    seen = []
    for rank in range(2):
        it = BatchIterator(Split(), batch_size=8, seed=0, rank=rank, world_size=2)
        rows = [next(it)["input_ids"][:, 0] // 4 for _ in range(it.steps_per_epoch)]
        seen.append({int(r) for batch in rows for r in batch})
    assert not seen[0] & seen[1] and len(seen[0] | seen[1]) == 64
