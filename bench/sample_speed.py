"""Sampling throughput of every masked-diffusion sampler and of autoregressive decoding.

Samplers timed (all in one process, interleaved run by run, median of `--repeats` runs):

  ancestral    masked diffusion, one network call per step, steps = seq_len
  cached       ancestral that skips the network for rows where no token changed, steps = seq_len
  confidence   confidence-ordered unmasking, `--tokens_per_step` tokens per step (2)
  ar           autoregressive decoding with the KV cache (dlms.samplers.AutoregressiveSampler)
  ar_nocache   reference: the full forward on the growing prefix at every position
  ancestral, cached again with steps = `--long_steps_factor` x seq_len (4x): with more steps
               than tokens most steps reveal nothing in a row, which is where the cache pays off.

Models are randomly initialised by default (speed does not depend on training): a `small`
backbone with `SpecialTokens(pad=0, bos=1, eos=2, mask=3, vocab_size=1024)`, bidirectional for
masked and causal for ar. `--checkpoint RUN` (repeatable) loads trained `DiffusionLM` runs
instead; each run's method decides which samplers it is timed with.

Every sequence starts with a fixed bos token (as `DiffusionLM.sample` does for padded data),
so a row has seq_len - 1 generated tokens; tokens_per_s = num_samples x generated tokens /
seconds. For masked samplers, `network_calls` and `rows_evaluated` count the backbone's
forward calls and the rows they processed; `rows_skipped` is what the cache saved against
one row per sample per step.

    PYTHONPATH=src python bench/sample_speed.py [--preset small] [--seq_len 32] [--num_samples 16]
        [--steps N] [--tokens_per_step 2] [--repeats 3] [--threads N] [--checkpoint RUN ...]
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass, field

import torch

from threads import set_threads  # bench/threads.py, beside this script

from dlms.assembly import autocast_context
from dlms.backbones import build_backbone, resolve_model_config
from dlms.config import ModelConfig
from dlms.method_options import METHOD_OPTIONS
from dlms.methods import SpecialTokens, build_method
from dlms.samplers import build_sampler
from dlms.samplers.common import sample_categorical

SPECIAL = SpecialTokens(pad=0, bos=1, eos=2, mask=3, vocab_size=1024)


class CallCounter:
    """Counts a backbone's forward calls and the rows (sequences) they process."""

    def __init__(self, model: torch.nn.Module):
        self.calls = 0
        self.rows = 0
        model.register_forward_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs, output):
        ids = args[0] if args else kwargs.get("input_ids")
        if ids is None:
            ids = kwargs.get("inputs_embeds")
        self.calls += 1
        self.rows += int(ids.shape[0])

    def reset(self) -> None:
        self.calls = self.rows = 0


@dataclass
class Parts:
    """One model to sample from: its method, backbone and starting canvas."""

    label: str  # "random" or the checkpoint path
    method: object
    model: torch.nn.Module
    canvas: torch.Tensor
    fixed: torch.Tensor
    counter: CallCounter = field(init=False)

    def __post_init__(self):
        self.model.eval()
        self.counter = CallCounter(self.model)


def random_parts(method_name: str, preset: str, seq_len: int, num_samples: int, seed: int) -> Parts:
    method = build_method(METHOD_OPTIONS.get(method_name)(), SPECIAL)
    cfg = resolve_model_config(ModelConfig(preset=preset), seq_len, method.causal)
    torch.manual_seed(seed)
    model = build_backbone(cfg, SPECIAL.vocab_size)
    canvas = torch.full((num_samples, seq_len), SPECIAL.mask, dtype=torch.long)
    canvas[:, 0] = SPECIAL.bos
    fixed = torch.zeros_like(canvas, dtype=torch.bool)
    fixed[:, 0] = True
    return Parts("random", method, model, canvas, fixed)


def checkpoint_parts(path: str, seq_len: int, num_samples: int, device: str) -> Parts:
    from dlms.model import DiffusionLM

    lm = DiffusionLM.load_checkpoint(path, device=device)
    canvas, fixed = lm.canvas(None, seq_len, num_samples)
    return Parts(path, lm.method, lm.model, canvas, fixed)


@torch.no_grad()
def ar_without_cache(parts: Parts, generator: torch.Generator, callback) -> torch.Tensor:
    """Reference AR decoding: the full forward over the whole prefix at every position."""
    special = parts.method.special
    out = parts.canvas.clone()
    prefix = int(parts.fixed[0].sum())
    done = torch.zeros(out.shape[0], dtype=torch.bool, device=out.device)
    for pos in range(prefix, out.shape[1]):
        logits = parts.model(out[:, :pos])[:, -1].float()
        logits[:, special.mask] = float("-inf")
        logits[:, special.pad] = float("-inf")
        token = sample_categorical(logits, 1.0, generator)
        token = torch.where(done, torch.full_like(token, special.pad), token)
        out[:, pos] = token
        done |= token == special.eos
        callback(pos - prefix + 1, out.shape[1] - prefix, out)
        if done.all():
            out[:, pos + 1:] = special.pad
            break
    return out


@dataclass
class Case:
    """One sampler configuration to time."""

    sampler: str  # the sampler's registry name, or "ar_nocache"
    parts: Parts
    num_steps: int
    tokens_per_step: int | None = None
    config: str = ""
    seconds: list[float] = field(default_factory=list)
    steps_run: int = 0
    calls: int = 0
    rows: int = 0
    output: torch.Tensor | None = None

    def run(self, seed: int, autocast) -> None:
        parts = self.parts
        generator = torch.Generator(device=parts.canvas.device).manual_seed(seed)
        steps = [0]

        def callback(step, total, x):
            steps[0] = step

        parts.counter.reset()
        start = time.perf_counter()
        with autocast:
            if self.sampler == "ar_nocache":
                out = ar_without_cache(parts, generator, callback)
            else:
                sampler = build_sampler(self.sampler, parts.method, parts.model)
                wanted = {"num_steps": self.num_steps, "tokens_per_step": self.tokens_per_step}
                options = {k: v for k, v in wanted.items() if k in sampler.options and v is not None}
                out = sampler.sample(parts.canvas, parts.fixed, generator=generator, callback=callback, **options)
        if parts.canvas.device.type == "cuda":
            torch.cuda.synchronize(parts.canvas.device)
        self.seconds.append(time.perf_counter() - start)
        self.steps_run, self.calls, self.rows, self.output = steps[0], parts.counter.calls, parts.counter.rows, out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="small", choices=("tiny", "small", "base"))
    p.add_argument("--seq_len", type=int, default=32)
    p.add_argument("--num_samples", type=int, default=16)
    p.add_argument("--steps", type=int, default=None, help="ancestral/cached steps (default: seq_len)")
    p.add_argument("--long_steps_factor", type=int, default=4,
                   help="second ancestral/cached configuration with this many times more steps (0: skip)")
    p.add_argument("--tokens_per_step", type=int, default=2, help="confidence sampler")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per sampler (after one warm-up run)")
    p.add_argument("--checkpoint", action="append", default=[], help="a trained run (repeatable)")
    p.add_argument("--precision", default="fp32", choices=("auto", "fp32", "bf16"))
    p.add_argument("--device", default="cpu", help="device for checkpoints: cpu, cuda or auto")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (0: torch's default); 1 is steadier on a busy shared machine")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    set_threads(args.threads)
    steps = args.steps or args.seq_len

    if args.checkpoint:
        models = [checkpoint_parts(path, args.seq_len, args.num_samples, args.device) for path in args.checkpoint]
    else:
        models = [random_parts(name, args.preset, args.seq_len, args.num_samples, args.seed) for name in ("masked", "ar")]

    cases: list[Case] = []
    for parts in models:
        if parts.method.name == "masked":
            cases.append(Case("ancestral", parts, steps, config="steps"))
            cases.append(Case("cached", parts, steps, config="steps"))
            free = int((~parts.fixed).sum(-1).max())
            cases.append(Case("confidence", parts, math.ceil(free / args.tokens_per_step),
                              tokens_per_step=args.tokens_per_step, config="tokens_per_step"))
            if args.long_steps_factor > 0:
                long = args.long_steps_factor * args.seq_len
                cases.append(Case("ancestral", parts, long, config=f"{args.long_steps_factor}x_seq_len_steps"))
                cases.append(Case("cached", parts, long, config=f"{args.long_steps_factor}x_seq_len_steps"))
        elif parts.method.name == "ar":
            cases.append(Case("ar", parts, args.seq_len, config="kv_cache"))
            cases.append(Case("ar_nocache", parts, args.seq_len, config="full_forward_reference"))

    device = models[0].canvas.device
    for round_ in range(1 + args.repeats):  # round 0 is the warm-up
        order = cases[round_ % len(cases):] + cases[: round_ % len(cases)]
        for case in order:
            case.run(args.seed, autocast_context(device, args.precision))
            if round_ == 0:
                case.seconds.clear()

    baseline = {}
    for case in cases:
        if case.sampler == "ancestral":
            baseline[(id(case.parts), case.num_steps)] = case
    for case in cases:
        seconds = statistics.median(case.seconds)
        generated = int((~case.parts.fixed).sum())
        if case.sampler in ("ar", "ar_nocache"):
            generated = case.parts.canvas.shape[0] * case.steps_run  # positions actually decoded
        record = {
            "bench": "sample_speed", "sampler": case.sampler, "config": case.config,
            "tokens_per_s": round(generated / seconds, 1), "seconds": round(seconds, 4),
            "num_steps": case.steps_run, "seq_len": args.seq_len, "num_samples": args.num_samples,
            "model": case.parts.label if case.parts.label != "random" else f"random-{args.preset}",
        }
        if case.sampler in ("ancestral", "cached", "confidence"):
            full_rows = case.parts.canvas.shape[0] * case.calls if case.sampler != "cached" else None
            ref = baseline.get((id(case.parts), case.num_steps))
            record["network_calls"] = case.calls
            record["rows_evaluated"] = case.rows
            if case.sampler == "cached" and ref is not None:
                record["rows_skipped"] = ref.rows - case.rows
                record["rows_skipped_fraction"] = round((ref.rows - case.rows) / max(ref.rows, 1), 3)
                record["speedup_vs_ancestral"] = round(statistics.median(ref.seconds) / seconds, 3)
                record["same_tokens_as_ancestral"] = bool(torch.equal(ref.output, case.output))
            elif full_rows is not None:
                record["rows_skipped"] = full_rows - case.rows
        if case.sampler == "ar":
            ref = next((c for c in cases if c.sampler == "ar_nocache" and c.parts is case.parts), None)
            if ref is not None:
                record["speedup_vs_nocache"] = round(statistics.median(ref.seconds) / seconds, 3)
        record["threads"] = torch.get_num_threads()
        print(json.dumps(record), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
