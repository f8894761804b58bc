"""bench/generation_frontier.py runs end to end on tiny models: the speed part prints a record
per configuration with its ratios, `--only` keeps AR (every ratio's baseline), and the quality
part writes the JSON lines, the plot and the report that docs/ is made of."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def bench(*args: str, cwd: Path = ROOT) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "generation_frontier.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def test_speed_records_carry_their_ratios_and_only_keeps_the_baseline():
    records = bench("speed", "--preset", "tiny", "--seq_lens", "16", "--batches", "1", "--tokens_per_call", "4",
                    "--block_size", "8", "--repeats", "1", "--threads", "1")
    by = {r["config"]: r for r in records}
    assert by["ar kv-cache"]["vs_ar"] == 1.0 and by["masked ancestral 1 token/step"]["vs_ancestral"] == 1.0
    assert any(c.startswith("block(bd3=4)") for c in by) and all(r["tokens_per_s"] > 0 for r in records)
    # k tokens per call: the number of calls is the free positions over k (rounded up per block)
    assert by["masked confidence k=4 block=8 cache=dual"]["network_calls"] == 4
    only = bench("speed", "--preset", "tiny", "--seq_lens", "16", "--batches", "1", "--tokens_per_call", "4",
                 "--repeats", "1", "--threads", "1", "--only", "cache=dual")
    assert [r["config"] for r in only] == ["ar kv-cache", "masked confidence k=4 block=32 cache=dual"]
    assert only[1]["vs_ancestral"] is None  # no ancestral run in the process: no ratio to it


def test_quality_writes_the_report(trained_runs, tmp_path):
    out = tmp_path / "report"
    judge = tmp_path / "judge"  # a run apart from the compared ones (here a copy: the plumbing is tested)
    shutil.copytree(trained_runs["ar"], judge)
    records = bench("quality", "--ar", str(trained_runs["ar"]), "--masked", str(trained_runs["masked"]),
                    "--judge", str(judge), "--num_samples", "4", "--batch", "2", "--thresholds", "0.9",
                    "--block_size", "4", "--threads", "1", "--only", "ancestral|threshold", "--report", str(out))
    configs = [r["config"] for r in records]
    assert configs == ["ar kv-cache", "masked ancestral 1 token/step", "masked threshold 0.9 block 4 cache none",
                       "masked threshold 0.9 block 4 cache dual", "masked threshold (entropy) 0.9 block 4 cache dual",
                       "masked threshold 0.9 block 4 cache dual, end drawn",
                       "masked threshold 0.9 block 4 cache dual, end at frontier"]
    for r in records:
        assert r["num_samples"] == 4 and {"mean_words", "unigram_entropy", "at_data_length", "gen_ppl"} <= set(r)
    assert (out / "frontier.png").stat().st_size > 0
    assert len((out / "frontier.jsonl").read_text().splitlines()) == len(records)
    assert "masked threshold 0.9 block 4 cache dual" in (out / "report.md").read_text()


def test_quality_refuses_a_judge_that_is_one_of_the_compared_runs(trained_runs):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "generation_frontier.py"), "quality", "--ar",
                           str(trained_runs["ar"]), "--judge", str(trained_runs["ar"]), "--num_samples", "2"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "judge" in done.stderr and "compared" in done.stderr


def test_trained_speed_times_the_configurations_interleaved(trained_runs):
    records = bench("trained_speed", "--ar", str(trained_runs["ar"]), "--masked", str(trained_runs["masked"]),
                    "--thresholds", "0.9", "--block_size", "4", "--only", "ancestral 1 token|threshold",
                    "--rounds", "2", "--threads", "1")
    by = {r["config"]: r for r in records}
    assert list(by)[0] == "ar kv-cache" and by["ar kv-cache"]["vs_ar"] == 1.0
    assert by["masked ancestral 1 token/step"]["vs_ancestral"] == 1.0
    assert all(r["part"] == "trained_speed" and r["tokens_per_s"] > 0 and r["rounds"] == 2 for r in records)
