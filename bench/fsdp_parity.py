"""Sharded training (FSDP2) against data parallelism on the same processes: one JSON line each.

For each precision it trains the same run (same initial weights, batches and noise) twice under
`torchrun --nproc_per_node N` with gloo (or nccl on CUDA), once with `train.parallel=ddp` and once
with `train.parallel=fsdp` (plus activation checkpointing), and prints the largest relative gap
between their training losses and validation NLLs step by step. It then interrupts an FSDP run
after `--crash_after` steps, resumes it from its sharded checkpoint and reports whether the
resumed run's losses and weights equal the uninterrupted one's, and loads the consolidated
`model.safetensors` in one process and samples from it.

    PYTHONPATH=src python bench/fsdp_parity.py                      # ~2 min on 2 CPU cores
    PYTHONPATH=src python bench/fsdp_parity.py --steps 40 --preset small --nproc 2
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def torchrun(nproc: int, args: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0 and "train_then_crash" not in " ".join(args):
        sys.exit(f"error: {' '.join(args[:3])} failed: {done.stderr.strip().splitlines()[-1:]}")


def train_args(run: Path, steps: int, preset: str, parallel: str, precision: str) -> list[str]:
    values = {"model.preset": preset, "data.builtin_examples": 2000, "data.seq_len": 32, "data.vocab_size": 300,
              "train.batch_size": 16, "train.max_steps": steps, "train.warmup_steps": 2,
              "train.eval_every": steps // 2, "train.save_every": steps // 2, "train.eval_batches": 4,
              "train.log_every": 1, "train.progress": False, "train.out_dir": str(run), "train.precision": precision,
              "train.parallel": parallel, "train.activation_checkpointing": parallel == "fsdp"}
    return ["--samples", "0", *[f"{k}={v}" for k, v in values.items()]]


def curves(run: Path) -> tuple[dict[int, float], dict[int, float]]:
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return ({r["step"]: r["loss"] for r in lines if "loss" in r}, {r["step"]: r["val_nll"] for r in lines if "val_nll" in r})


def largest_gap(a: dict[int, float], b: dict[int, float]) -> float:
    return max(abs(a[k] - b[k]) / abs(a[k]) for k in a)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--preset", choices=("tiny", "small", "base"), default="tiny")
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--crash_after", type=int, default=None, help="default: three quarters of --steps")
    args = parser.parse_args()
    if args.steps < 4 or args.nproc < 2:
        parser.error("--steps must be at least 4 and --nproc at least 2")
    crash_after = args.crash_after or (3 * args.steps) // 4
    root = Path(tempfile.mkdtemp(prefix="fsdp-parity-"))
    for precision in ("fp32", "bf16"):
        runs = {}
        seconds = {}
        for parallel in ("ddp", "fsdp"):
            runs[parallel] = root / f"{parallel}-{precision}"
            tic = time.perf_counter()
            torchrun(args.nproc, ["-m", "dlms.cli", "train", *train_args(runs[parallel], args.steps, args.preset,
                                                                          parallel, precision)])
            seconds[parallel] = round(time.perf_counter() - tic, 1)
        (ddp_loss, ddp_val), (fsdp_loss, fsdp_val) = curves(runs["ddp"]), curves(runs["fsdp"])
        print(json.dumps({"bench": "fsdp_parity", "precision": precision, "nproc": args.nproc, "preset": args.preset,
                          "steps": args.steps, "max_rel_loss_gap": round(largest_gap(ddp_loss, fsdp_loss), 6),
                          "max_rel_val_gap": round(largest_gap(ddp_val, fsdp_val), 6),
                          "final_loss_ddp": round(ddp_loss[args.steps], 4),
                          "final_loss_fsdp": round(fsdp_loss[args.steps], 4),
                          "first_loss": round(ddp_loss[1], 4), "seconds_ddp": seconds["ddp"],
                          "seconds_fsdp": seconds["fsdp"]}), flush=True)

    resumed = root / "resumed"
    torchrun(args.nproc, [str(ROOT / "tests/integration/train_then_crash.py"), str(crash_after), "train",
                          *train_args(resumed, args.steps, args.preset, "fsdp", "bf16")])
    saved = json.loads((resumed / "checkpoint/trainer_state.json").read_text())["step"]
    torchrun(args.nproc, ["-m", "dlms.cli", "train", "--resume", str(resumed), "--samples", "0"])
    from safetensors.torch import load_file

    from dlms import DiffusionLM

    straight = root / "fsdp-bf16"
    a, b = load_file(str(straight / "checkpoint/model.safetensors")), load_file(str(resumed / "checkpoint/model.safetensors"))
    lm = DiffusionLM.load_checkpoint(straight, device="cpu")
    texts = lm.sample(num_samples=2, steps=8, seed=0)
    print(json.dumps({"bench": "fsdp_parity", "resume": True, "interrupted_after": crash_after, "resumed_from": saved,
                      "losses_equal": curves(resumed) == curves(straight),
                      "weights_equal": set(a) == set(b) and all(bool((a[k] == b[k]).all()) for k in a),
                      "consolidated_loads": True, "sample": texts[0]}), flush=True)


if __name__ == "__main__":
    main()
