"""DGLM's trained stages under torchrun: two gloo processes, data parallel through the one
optimiser step (training/step.py); the main process alone embeds, writes and logs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.unit.test_dglm_pipeline import tiny_config

ROOT = Path(__file__).resolve().parents[2]


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "dlms.cli", "dglm", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def test_dglm_stages_train_data_parallel_and_resume(tmp_path, trained_runs, tiny_encoder_folder):
    config = tiny_config(tmp_path, tiny_encoder_folder, trained_runs["ar"])
    done = _torchrun("train", "--config", str(config))
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "run"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    # One line per checkpoint, written by the main process only, with the loss averaged over both.
    assert [(r["stage"], r["step"]) for r in records] == [("diffusion", 3), ("diffusion", 6), ("decoder", 2),
                                                           ("decoder", 4)]
    assert all(r["val_loss"] > 0 and r["train_loss"] > 0 for r in records)
    assert done.stdout.count("embed: wrote") == 1 and done.stdout.count("DGLM run in") == 1
    assert json.loads((run / "latent_diffusion" / "progress.json").read_text())["step"] == 6

    cfg = yaml.safe_load(config.read_text())
    cfg["diffusion"]["steps"] = 9
    longer = tmp_path / "longer.yaml"
    longer.write_text(yaml.safe_dump(cfg))
    resumed = _torchrun("train", "--config", str(longer), "--stage", "diffusion")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.count("resuming at step 6 of 9") == 1
    assert json.loads((run / "latent_diffusion" / "progress.json").read_text())["step"] == 9
