"""A training killed with SIGKILL (no chance to clean up) resumes exactly: the lock dies with the
process, leftovers of a save cut short are tidied, and the resumed run logs the losses of a run
that was never interrupted, bit for bit."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import tiny_overrides

STEPS = 40


def _train_argv(out: Path) -> list[str]:
    return [sys.executable, "-m", "dlms.cli", "train", "--samples", "0",
            *tiny_overrides(out, steps=STEPS, **{"train.save_every": 4, "train.eval_every": 1000})]


def _losses(run: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {r["step"]: r["loss"] for r in records if "loss" in r}


def _saved_step(run: Path) -> int:
    try:
        return json.loads((run / "checkpoint" / "trainer_state.json").read_text())["step"]
    except (OSError, ValueError, KeyError):
        return 0


def test_kill_9_then_resume_repeats_the_uninterrupted_run(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    straight = tmp_path / "straight"
    subprocess.run(_train_argv(straight), check=True, env=env, capture_output=True, timeout=300)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_train_argv(killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while _saved_step(killed) < 8 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be killed; raise STEPS"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    stopped_at = _saved_step(killed)
    assert 0 < stopped_at < STEPS

    resumed = subprocess.run([sys.executable, "-m", "dlms.cli", "train", "--resume", str(killed), "--samples", "0"],
                             env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert _saved_step(killed) == STEPS
    assert _losses(killed) == _losses(straight)
    assert sorted(_losses(killed)) == list(range(1, STEPS + 1))
    leftovers = [p.name for p in killed.iterdir() if ".tmp-" in p.name or p.name.endswith(".old")]
    assert leftovers == []
