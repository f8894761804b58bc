"""Training throughput of the framework's real training step against a minimal plain-PyTorch loop.

For each method (`masked`, `ar`) it builds a `dlms.training.Trainer` on the built-in corpus and
times `trainer._optimizer_step()` (data loading, method loss, backward, clipping, AdamW,
scheduler, metrics). In the same process it runs the simplest loop one would write by hand for
the same backbone class built from the same resolved config, on the same batch shapes (real
token ids from the same split) and in the same precision:

  ar:     loss = F.cross_entropy(model(x[:, :-1]), x[:, 1:])
  masked: t ~ U(eps, 1); mask each token with prob t; loss = sum_masked CE(model(x_t), x) / t / numel
  then    loss.backward(); AdamW.step(); zero_grad()

All four variants are interleaved step by step (the order rotates every round) and the median
step time of each is reported, so machine-wide noise hits them alike; the ratios are what to
read, not the absolute numbers.

    PYTHONPATH=src python bench/train_speed.py [--preset small] [--batch_size 64] [--seq_len 32]
                                               [--steps 12] [--precision auto|fp32|bf16] [--threads N]

Prints one JSON line per method, a line with the masked/AR step-cost ratio, and a line for
`gaussian` (framework step only) with its cost against the masked step: the plain masked
backbone, and the same backbone as gaussian's, i.e. with time conditioning (MDLM's DiT is
time-conditioned too; `masked_time` below). A gaussian step runs the network twice on the half
of the batches that use self-conditioning, so its step times are bimodal: its cost is the mean
step time (the expected cost), compared with the masked mean; the other lines use medians.
Targets: framework_tokens_per_s >= 0.9 x plain_tokens_per_s; masked step <= 1.15 x AR step;
gaussian step <= 1.3 x masked step.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from threads import set_threads  # bench/threads.py, beside this script

from dlms.assembly import bf16_is_fast
from dlms.backbones import build_backbone
from dlms.config import RunConfig
from dlms.data import BatchIterator
from dlms.method_options import METHOD_OPTIONS
from dlms.training import Trainer

METHODS = ("masked", "ar")
FRAMEWORK_ONLY = ("gaussian", "masked_time")  # framework step only (no plain loop)
TIME_CONDITIONED = {"masked_time": "masked"}  # variant -> method, with model.time_conditioning on


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision == "auto":
        return "bf16" if bf16_is_fast(device) else "fp32"
    return precision


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_config(method: str, args, out_dir: str) -> RunConfig:
    cfg = RunConfig()
    cfg.method = METHOD_OPTIONS.get(TIME_CONDITIONED.get(method, method))()
    cfg.model.time_conditioning = method in TIME_CONDITIONED
    cfg.model.preset = args.preset
    cfg.data.dataset = "builtin"
    cfg.data.builtin_examples = args.builtin_examples
    cfg.data.seq_len = args.seq_len
    t = cfg.train
    t.batch_size = args.batch_size
    t.precision = args.precision
    t.device = args.device
    t.progress = False
    t.out_dir = out_dir
    t.max_steps = 1_000_000
    t.eval_every = 1_000_000_000
    t.save_every = 1_000_000_000
    t.log_every = 1_000_000_000
    return cfg


class PlainLoop:
    """The minimal hand-written training step for one method, same backbone and shapes."""

    def __init__(self, method: str, trainer: Trainer, precision: str, num_batches: int = 8):
        self.method = method
        self.device = trainer.device
        torch.manual_seed(trainer.cfg.train.seed)
        self.model = build_backbone(trainer.cfg.model, trainer.model.spec.vocab_size).to(self.device)
        self.model.train()
        t = trainer.cfg.train
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=t.learning_rate,
                                           betas=(t.beta1, t.beta2), weight_decay=t.weight_decay)
        special = trainer.method.special
        self.mask_id, self.pad_id = special.mask, special.pad
        self.eps = None if method == "ar" else trainer.cfg.method.eps  # ar has no noise
        # Real token rows of the same split, the same batch shape; fetched once up front.
        loader = BatchIterator(trainer.dataset.train, t.batch_size, seed=t.seed + 1)
        self.batches = [next(loader)["input_ids"].to(self.device) for _ in range(num_batches)]
        self.i = 0
        self.autocast = (torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
                         if precision == "bf16" else None)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        if self.method == "ar":
            logits = self.model(x[:, :-1])
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), x[:, 1:].reshape(-1),
                                   ignore_index=self.pad_id)
        t = self.eps + (1 - self.eps) * torch.rand(x.shape[0], 1, device=x.device)
        mask = torch.rand(x.shape, device=x.device) < t
        xt = torch.where(mask, torch.full_like(x, self.mask_id), x)
        logits = self.model(xt)
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), x.reshape(-1), reduction="none")
        return (ce.view_as(x) * mask / t).sum() / x.numel()

    def step(self) -> float:
        x = self.batches[self.i % len(self.batches)]
        self.i += 1
        if self.autocast is not None:
            with self.autocast:
                loss = self.loss(x)
        else:
            loss = self.loss(x)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.item()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="small", choices=("tiny", "small", "base"))
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--seq_len", type=int, default=32)
    p.add_argument("--steps", type=int, default=12, help="timed steps per variant (after warm-up)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per variant first")
    p.add_argument("--precision", default="fp32", choices=("auto", "fp32", "bf16"))
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--builtin_examples", type=int, default=20000)
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (0: torch's default); 1 is steadier on a busy shared machine")
    args = p.parse_args(argv)
    set_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="dlms-bench-train-") as tmp:
        trainers: dict[str, Trainer] = {}
        dataset = None
        for method in (*METHODS, *FRAMEWORK_ONLY):
            trainers[method] = Trainer(make_config(method, args, str(Path(tmp) / method)), dataset=dataset)
            dataset = trainers[method].dataset
        device = trainers["masked"].device
        precision = resolve_precision(args.precision, device)
        plains = {m: PlainLoop(m, trainers[m], precision) for m in METHODS}

        def framework_step(method: str):
            def run():
                trainer = trainers[method]
                trainer._optimizer_step()
                trainer.step += 1  # as Trainer.train does: each step draws fresh noise
            return run

        variants = {}
        for m in METHODS:
            variants[(m, "framework")] = framework_step(m)
            variants[(m, "plain")] = plains[m].step
        for m in FRAMEWORK_ONLY:
            variants[(m, "framework")] = framework_step(m)
        keys = list(variants)
        times: dict[tuple[str, str], list[float]] = {k: [] for k in keys}
        for round_ in range(args.warmup + args.steps):
            shift = round_ % len(keys)
            for key in keys[shift:] + keys[:shift]:  # rotate the order: no variant always goes first
                sync(device)
                start = time.perf_counter()
                variants[key]()
                sync(device)
                if round_ >= args.warmup:
                    times[key].append(time.perf_counter() - start)

        tokens = args.batch_size * args.seq_len
        median = {k: statistics.median(v) for k, v in times.items()}
        for m in METHODS:
            fw, pl = median[(m, "framework")], median[(m, "plain")]
            print(json.dumps({
                "bench": "train_speed", "method": m,
                "framework_tokens_per_s": round(tokens / fw, 1), "plain_tokens_per_s": round(tokens / pl, 1),
                "ratio": round(pl / fw, 3),
                "framework_step_ms": round(1000 * fw, 2), "plain_step_ms": round(1000 * pl, 2),
                "preset": args.preset, "batch_size": args.batch_size, "seq_len": args.seq_len,
                "precision": precision, "device": str(device), "steps": args.steps,
                "threads": torch.get_num_threads(),
            }), flush=True)
        cost = median[("masked", "framework")] / median[("ar", "framework")]
        plain_cost = median[("masked", "plain")] / median[("ar", "plain")]
        print(json.dumps({"bench": "train_speed", "masked_over_ar_step_cost": round(cost, 3),
                          "plain_masked_over_ar_step_cost": round(plain_cost, 3)}), flush=True)
        mean = {k: statistics.fmean(v) for k, v in times.items()}
        fw = mean[("gaussian", "framework")]
        print(json.dumps({"bench": "train_speed", "method": "gaussian", "framework_tokens_per_s": round(tokens / fw, 1),
                          "framework_step_ms_mean": round(1000 * fw, 2),
                          "gaussian_over_masked_step_cost": round(fw / mean[("masked", "framework")], 3),
                          "gaussian_over_time_conditioned_masked_step_cost":
                              round(fw / mean[("masked_time", "framework")], 3)}),
                  flush=True)
        for trainer in trainers.values():
            trainer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
