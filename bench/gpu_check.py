"""End-to-end check of every family on one device, in bf16: train, resume, sample, evaluate; MFU.

Meant for a CUDA machine lent for a few minutes (`scripts/gpu_check.sh`); `--device cpu --tiny`
is the dry run that the test suite runs. It prints one JSON line with the device and its
measured bf16 matmul peak, then one JSON line per family (`dlms.methods.METHODS.names()`, then
`dglm`), and exits 1 when any family failed (every family still gets its line).

Per family, through the public API: `Trainer(cfg).train()` for `--steps` steps with
`train.precision=bf16` forced, `Trainer.resume(run, max_steps=steps + resume_steps).train()`
(resume_ok: it starts at `steps` and ends at `steps + resume_steps`), then
`DiffusionLM.load_checkpoint(run)`: every sampler registered for the family, timed, and
`lm.evaluate(passes=2, max_sequences=...)`.

- train_tokens_per_s: batch x seq_len tokens per step over the steps after `--warmup`, from the
  per-step `tokens_per_s` the trainer logs with `train.log_every=1` (each step ends with
  `loss.item()`, which waits for the GPU, so the per-step times are synchronised).
- flops_per_token = 6 N + 12 n_layers d_model seq_len (forward + backward; N = every
  parameter, the token table too; the attention term counts the full L x L scores, causal or
  not). gaussian adds its self-conditioning forward, run without gradients on a share p = 0.5
  of the steps: + p (6 N + 12 n_layers d_model seq_len) / 3. masked projects only the masked
  positions onto the vocabulary, so for it the formula overcounts a little.
- achieved_tflops = flops_per_token x train_tokens_per_s; mfu = achieved / the measured bf16 peak
  (a square bf16 matmul, median of repeats), not the datasheet's.
- counted_flops_per_token: what `torch.utils.flop_counter` counts (matmuls, attention) in one
  more training step's forward and backward, per batch token (self-conditioning counted off and
  on, weighted by p); counted_tflops and mfu_counted as above. The formula overcounts where
  parameters act once per sequence, not per token: gaussian's time conditioning (adaLN
  modulation, ~45M of its 131M parameters at `base`), so read mfu_counted for gaussian.
- sample_tokens_per_s: generated tokens (num_samples x (length - start token)) per second of the
  family's default sampler, after a warm-up call; sampler_tokens_per_s has every sampler.

Each family runs in its own process (`--start_method`: spawn on CUDA, forkserver on the CPU) with a timeout (the
smaller of `--family_timeout_s` and what is left of `--budget_s`), so a hang, a crash or an
out-of-memory error costs one family, not the check. DGLM (`dlms.dglm`) is trained in bf16 with the
`ar` family's run as its decoder; without `ar` in `--families` its line says `skipped`, which is
not a failure.

    python bench/gpu_check.py                               # CUDA, base preset, ~1-3 min
    python bench/gpu_check.py --device cpu --tiny           # the dry run, ~30 s on one CPU core
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

# What one run is, per size. "gpu": a GPT-2-small-sized model on packed 128-token rows.
SIZES = {
    "gpu": {"preset": "base", "seq_len": 128, "batch_size": 64, "steps": 80, "warmup": 10, "resume_steps": 10,
            "learning_rate": 1e-3, "builtin_examples": 20000, "vocab_size": 1024, "layout": "packed",
            "eval_sequences": 256, "eval_batch": 64, "num_samples": 32, "sample_steps": 64, "matmul_n": 8192,
            "matmul_warmup": 5, "matmul_inner": 10, "matmul_repeats": 7,
            "dglm": {"builtin_examples": 4000, "diffusion_steps": 60, "decoder_steps": 30, "resume_steps": 10,
                     "batch_size": 64, "prefix_tokens": 24, "continuation_tokens": 24, "gen_steps": 20,
                     "gen_tokens": 24, "num_prefixes": 8}},
    "tiny": {"preset": "tiny", "seq_len": 32, "batch_size": 8, "steps": 8, "warmup": 3, "resume_steps": 2,
             "learning_rate": 3e-3, "builtin_examples": 400, "vocab_size": 300, "layout": "padded",
             "eval_sequences": 16, "eval_batch": 16, "num_samples": 4, "sample_steps": 8, "matmul_n": 512,
             "matmul_warmup": 1, "matmul_inner": 2, "matmul_repeats": 3,
             "dglm": {"builtin_examples": 300, "diffusion_steps": 4, "decoder_steps": 2, "resume_steps": 2,
                      "batch_size": 8, "prefix_tokens": 16, "continuation_tokens": 16, "gen_steps": 4,
                      "gen_tokens": 6, "num_prefixes": 2}},
}
PRECISION = "bf16"
MIN_FAMILY_S = 5.0  # a family is not started with less budget than this left
SKIPPED = "skipped"
# Imported once by the forkserver (CPU dry runs); torch._dynamo comes with the first optimizer,
# transformers with the first tokenizer: seconds each. Missing names are ignored.
PRELOAD = ["torch", "torch._dynamo", "transformers.tokenization_utils_tokenizers",
           "transformers.tokenization_utils_fast",
           "transformers.models.auto.tokenization_auto", "dlms.training", "dlms.model", "dlms.samplers",
           "dlms.methods", "dlms.data.corpus"]  # what every method family needs, nothing that could fail to import


# ---------------------------------------------------------------- helpers (run in the children)

def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def sig(x: float, digits: int = 4) -> float:
    """`x` rounded to `digits` significant digits (CPU dry runs give very small TFLOP/s)."""
    return float(f"{x:.{digits}g}")


def finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def measure_peak(device: str, size: dict) -> dict:
    """bf16 matmul TFLOP/s of a square [n, n] @ [n, n]: median over repeats of `inner` back-to-back products."""
    import torch

    from dlms.devices import resolve_device

    info = {"torch": torch.__version__, "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
    try:
        dev = resolve_device(device)
    except Exception as exc:  # noqa: BLE001  (the header still says which torch build this is)
        return {**info, "ok": False, "error": one_line(exc)}
    n, inner = size["matmul_n"], size["matmul_inner"]
    gen = torch.Generator(device=dev).manual_seed(0)
    a = torch.randn(n, n, device=dev, dtype=torch.bfloat16, generator=gen)
    b = torch.randn(n, n, device=dev, dtype=torch.bfloat16, generator=gen)
    for _ in range(size["matmul_warmup"]):
        a @ b
    sync(dev)
    times = []
    for _ in range(size["matmul_repeats"]):
        sync(dev)
        start = time.perf_counter()
        for _ in range(inner):
            a @ b
        sync(dev)
        times.append((time.perf_counter() - start) / inner)
    tflops = sig(2 * n ** 3 / statistics.median(times) / 1e12)
    return {"device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", **info,
            "bf16_matmul_tflops": tflops, "matmul_n": n, "threads": torch.get_num_threads(), "ok": finite(tflops)}


def run_config(family: str, size: dict, device: str, steps: int, out_dir: Path):
    from dlms.config import load_config

    values = {
        "method.name": family, "model.preset": size["preset"], "data.dataset": "builtin",
        "data.builtin_examples": size["builtin_examples"], "data.vocab_size": size["vocab_size"],
        "data.seq_len": size["seq_len"], "data.layout": size["layout"], "train.batch_size": size["batch_size"],
        "train.learning_rate": size["learning_rate"], "train.max_steps": steps, "train.warmup_steps": size["warmup"],
        "train.eval_every": steps, "train.save_every": steps, "train.eval_batches": 2, "train.log_every": 1,
        "train.progress": False, "train.precision": PRECISION, "train.device": device, "train.out_dir": str(out_dir),
        "sample.num_steps": size["sample_steps"],
    }
    return load_config(None, [f"{k}={v}" for k, v in values.items()])


def train_speed(run_dir: Path, tokens_per_step: int, warmup: int) -> tuple[float, int]:
    """(tokens/s over the logged steps after `warmup`, how many steps that is) from metrics.jsonl."""
    seconds, steps = 0.0, 0
    for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record.get("tokens_per_s") and record["step"] > warmup:
            seconds += tokens_per_step / record["tokens_per_s"]
            steps += 1
    if steps == 0:
        raise RuntimeError(f"no logged steps after the {warmup} warm-up steps; raise --steps")
    return steps * tokens_per_step / seconds, steps


def counted_flops_per_token(trainer) -> float:
    """FLOPs of one training step's forward and backward (matmuls and attention, as
    `torch.utils.flop_counter` counts them) per batch token, on a fresh batch. A method with
    self-conditioning is counted with it off and on, weighted by its probability."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    batch = {k: (v.to(trainer.device) if isinstance(v, torch.Tensor) else v) for k, v in next(trainer.loader).items()}
    method, model = trainer.method, trainer.train_model
    p = float(getattr(method, "self_condition_prob", 0.0))
    own = vars(method).get("self_condition_prob")
    counts = {}
    try:
        for prob in ((0.0, 1.0) if p > 0 else (0.0,)):
            if p > 0:
                method.self_condition_prob = prob
            counter = FlopCounterMode(display=False)
            with counter:
                with trainer.autocast:
                    loss = method.loss(model, batch).loss
                loss.backward()
            model.zero_grad(set_to_none=True)
            counts[prob] = counter.get_total_flops()
    finally:
        if own is not None:
            method.self_condition_prob = own
        elif "self_condition_prob" in vars(method):
            del method.self_condition_prob  # back to the class's value
    total = (1 - p) * counts[0.0] + p * counts.get(1.0, 0.0)
    return total / (trainer.cfg.train.batch_size * trainer.cfg.data.seq_len)


def check_family(family: str, args, size: dict, work: Path) -> dict:
    """Train, resume, sample and evaluate one method family; the JSON record (without mfu)."""
    import torch

    from dlms.model import DiffusionLM
    from dlms.samplers import SAMPLERS
    from dlms.training import Trainer
    from dlms.checkpoint import find_checkpoint, read_trainer_state

    run_dir = work / family
    steps, more = args.steps or size["steps"], size["resume_steps"]
    record: dict = {"family": family}
    trainer = Trainer(run_config(family, size, args.device, steps, run_dir))
    try:
        dev = trainer.device
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        m = trainer.cfg.model
        params = sum(p.numel() for p in trainer.model.parameters())
        record.update(device=str(dev), precision=trainer.cfg.train.precision, parameters=params, preset=m.preset,
                      d_model=m.d_model, n_layers=m.n_layers, seq_len=trainer.cfg.data.seq_len,
                      batch_size=trainer.cfg.train.batch_size, steps=steps)
        sync(dev)
        start = time.perf_counter()
        summary = trainer.train()
        sync(dev)
        record["train_s"] = round(time.perf_counter() - start, 2)
        self_cond = float(getattr(trainer.method, "self_condition_prob", 0.0))
    finally:
        trainer.close()
    if summary["step"] != steps:
        raise RuntimeError(f"training stopped at step {summary['step']} of {steps}")
    tokens_per_s, timed = train_speed(run_dir, trainer.tokens_per_step, min(size["warmup"], steps - 1))
    attention = 12 * m.n_layers * m.d_model * trainer.cfg.data.seq_len
    flops = (6 * params + attention) * (1 + self_cond / 3)
    record.update(timed_steps=timed, train_tokens_per_s=round(tokens_per_s, 1), flops_per_token=int(flops),
                  self_conditioning_prob=self_cond, achieved_tflops=sig(flops * tokens_per_s / 1e12),
                  train_loss=summary["loss"])

    resumed = Trainer.resume(run_dir, max_steps=steps + more)
    try:
        started_at = resumed.step
        final = resumed.train()["step"]
        counted = counted_flops_per_token(resumed)  # after training: the batch it draws changes nothing saved
    finally:
        resumed.close()
    record.update(counted_flops_per_token=int(counted), counted_tflops=sig(counted * tokens_per_s / 1e12))
    saved = int(read_trainer_state(find_checkpoint(run_dir))["step"])
    record["resume_ok"] = started_at == steps and final == saved == steps + more
    record["resume_steps"] = [started_at, final]

    lm = DiffusionLM.load_checkpoint(run_dir, device=args.device)
    record["sample_precision"] = lm.precision
    length, n = size["seq_len"], size["num_samples"]
    generated = n * (length - len(lm.encode_prompt(None)))
    rates, masks_left = {}, 0
    for name in [s for s in SAMPLERS.names() if family in SAMPLERS.get(s).method_names]:
        kwargs = {"length": length, "num_samples": n, "sampler": name, "seed": 0}
        stepped = "num_steps" in getattr(SAMPLERS.get(name), "options", ("num_steps",))  # ar: one token per step
        lm.sample_ids(**kwargs, **({"steps": 2} if stepped else {}))  # warm-up: kernels, allocator
        sync(dev)
        start = time.perf_counter()
        ids = lm.sample_ids(**kwargs, **({"steps": size["sample_steps"]} if stepped else {}))
        sync(dev)
        rates[name] = round(generated / (time.perf_counter() - start), 1)
        if tuple(ids.shape) != (n, length) or ids.device.type != dev.type:
            raise RuntimeError(f"sampler {name} returned {tuple(ids.shape)} on {ids.device}, "
                               f"not ({n}, {length}) on {dev}")
        if family == "masked":  # a mask token left in the output is a token the sampler never decided
            masks_left += int((ids == lm.method.special.mask).sum())
        record.setdefault("sample_text", lm.decode(ids[:1])[0][:80])
    record.update(sampler_tokens_per_s=rates, sample_tokens_per_s=rates[lm.method.default_sampler],
                  sample_steps=size["sample_steps"], num_samples=n, masks_left=masks_left)

    start = time.perf_counter()
    result = lm.evaluate(passes=2, max_sequences=size["eval_sequences"], batch_size=size["eval_batch"])
    record.update(val_nll=round(float(result["nll"]), 4), val_se=result.get("se"), val_bound=result.get("bound"),
                  eval_s=round(time.perf_counter() - start, 2))
    if dev.type == "cuda":
        record["max_memory_gb"] = round(torch.cuda.max_memory_allocated(dev) / 2 ** 30, 2)
    problems = [what for what, bad in ((f"resume went {started_at} -> {final} (saved {saved}), not {steps} -> "
                                        f"{steps + more}", not record["resume_ok"]),
                                       ("val_nll not finite", not finite(record["val_nll"])),
                                       ("train tokens/s not positive", not tokens_per_s > 0),
                                       (f"{masks_left} mask tokens left in the samples", masks_left > 0)) if bad]
    record["ok"] = not problems
    if problems:
        record["error"] = "; ".join(problems)
    return record


def check_dglm(args, size: dict, work: Path) -> dict:
    """DGLM's three stages with the `ar` run as decoder, then more steps (resume), then generation."""
    import torch

    from dlms.dglm.config import dglm_config_from_dict
    from dlms.dglm.pipeline import DglmPipeline
    from dlms.dglm.stages import read_training_state
    from dlms.dglm.train import DECODER, LATENT, DglmTrainer
    from dlms.devices import resolve_device

    d = size["dglm"]
    ar_run = work / "ar"
    if not (ar_run / "config.yaml").is_file():
        raise RuntimeError("the ar family's run is missing; DGLM needs it as its decoder")
    dev = resolve_device(args.device)
    out = work / "dglm"

    def config(extra: int) -> dict:
        cfg = {"sentence_encoder_model_name": "minilm", "auto_regressive_model_name": str(ar_run),
               "device": args.device,
               "out_dir": str(out), "seed": 0,
               "data": {"dataset": "builtin", "builtin_examples": d["builtin_examples"], "val_fraction": 0.1},
               "latent": {"num_pseudo_tokens": 4},
               "diffusion": {"steps": d["diffusion_steps"] + extra, "batch_size": d["batch_size"], "warmup_steps": 2,
                             "save_every": d["diffusion_steps"]},
               "decoder": {"steps": d["decoder_steps"] + extra, "batch_size": d["batch_size"], "warmup_steps": 2,
                           "save_every": d["decoder_steps"], "max_prefix_tokens": d["prefix_tokens"],
                           "max_continuation_tokens": d["continuation_tokens"]},
               "generation": {"num_steps": d["gen_steps"], "max_tokens": d["gen_tokens"]},
               "precision": PRECISION}
        return dglm_config_from_dict(cfg)

    def log(message: str) -> None:
        print(f"[dglm] {message}", file=sys.stderr)

    trainer = DglmTrainer(config(0), log=log, progress=False)
    record: dict = {"family": "dglm", "device": str(dev), "precision": getattr(trainer, "precision", "fp32 (no key)")}
    start = time.perf_counter()
    trainer.run(("embed",))
    record["embed_s"] = round(time.perf_counter() - start, 2)
    for stage, steps in (("diffusion", d["diffusion_steps"]), ("decoder", d["decoder_steps"])):
        sync(dev)
        start = time.perf_counter()
        getattr(trainer, f"train_{stage}")()
        sync(dev)
        seconds = time.perf_counter() - start  # includes the stage's set-up, validation and checkpoint
        record[f"{stage}_pairs_per_s"] = round(steps * d["batch_size"] / seconds, 1)
    DglmTrainer(config(d["resume_steps"]), log=log, progress=False).run()
    done = {name: int(read_training_state(out / folder)[0].get("step", 0)) for name, folder in
            (("diffusion", LATENT), ("decoder", DECODER))}
    record["resume_ok"] = done == {"diffusion": d["diffusion_steps"] + d["resume_steps"],
                                   "decoder": d["decoder_steps"] + d["resume_steps"]}
    record["resume_steps"] = done
    losses = {}
    for line in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        losses[row["stage"]] = row["val_loss"]
    record.update(diffusion_val_loss=losses.get("diffusion"), decoder_val_loss=losses.get("decoder"))

    pipeline = DglmPipeline.load(out, device=args.device)
    prefixes = [("the food was", "the chef")[i % 2] for i in range(d["num_prefixes"])]
    texts = pipeline.generate(prefixes, num_samples=1, seed=0)  # warm-up
    sync(dev)
    start = time.perf_counter()
    texts = pipeline.generate(prefixes, num_samples=1, seed=1)
    sync(dev)
    record["samples_per_s"] = round(len(texts) / (time.perf_counter() - start), 2)
    record["sample_text"] = texts[0][:80]
    if dev.type == "cuda":
        record["max_memory_gb"] = round(torch.cuda.max_memory_allocated(dev) / 2 ** 30, 2)
    problems = [what for what, bad in ((f"resume ended at {done}", not record["resume_ok"]),
                                       ("val loss not finite", not losses or not all(map(finite, losses.values()))),
                                       ("no samples", len(texts) != len(prefixes))) if bad]
    record["ok"] = not problems
    if problems:
        record["error"] = "; ".join(problems)
    return record


def child(task: str, args, size: dict, work: str, result_path: str) -> None:
    """One task in its own process: the record goes to `result_path`; stdout is kept for the parent's JSON."""
    os.dup2(2, 1)  # anything printed here (libraries included) goes to stderr
    sys.stdout = sys.stderr
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    try:
        if task == "peak":
            record = measure_peak(args.device, size)
        elif task == "dglm":
            record = check_dglm(args, size, Path(work))
        else:
            record = check_family(task, args, size, Path(work))
    except Exception as exc:  # noqa: BLE001  (reported as one line; the traceback goes to stderr)
        from dlms.errors import DlmsError

        if not isinstance(exc, DlmsError):
            traceback.print_exc()
        record = {"ok": False, "error": one_line(exc)}
    tmp = result_path + ".tmp"
    Path(tmp).write_text(json.dumps(record), encoding="utf-8")
    os.replace(tmp, result_path)


# ---------------------------------------------------------------- the parent: scheduling, timeouts, report

def run_task(ctx, task: str, args, size: dict, work: Path, timeout: float) -> dict:
    result = work / f"{task}.result.json"
    proc = ctx.Process(target=child, args=(task, args, size, str(work), str(result)))
    start = time.perf_counter()
    proc.start()
    try:
        proc.join(timeout)
    finally:
        timed_out = proc.is_alive()
        if timed_out:  # also on Ctrl-C in the parent: no child outlives the check
            proc.kill()
            proc.join(10)
    if timed_out:
        record = {"ok": False, "error": f"timed out after {timeout:.0f} s (--family_timeout_s / --budget_s)"}
    elif result.is_file():
        record = json.loads(result.read_text(encoding="utf-8"))
    else:
        record = {"ok": False, "error": f"the process exited with code {proc.exitcode} without a result (crashed)"}
    record["elapsed_s"] = round(time.perf_counter() - start, 2)
    return record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu for a dry run")
    p.add_argument("--tiny", action="store_true", help="tiny models and a handful of steps (the dry run)")
    p.add_argument("--families", default="all", help="comma-separated subset of the methods and dglm (default all)")
    p.add_argument("--steps", type=int, default=0, help="training steps before the resume (0: the size's default)")
    p.add_argument("--budget_s", type=float, default=None,
                   help="wall-clock limit for the whole check (default 360, tiny 120)")
    p.add_argument("--family_timeout_s", type=float, default=None, help="limit per family (default 150, tiny 60)")
    p.add_argument("--start_method", default="auto", choices=("auto", "spawn", "forkserver", "fork"),
                   help="how each family's process starts; auto: spawn on CUDA (a fresh interpreter, the safe "
                        "way with CUDA), forkserver on the CPU (forked from a server that imported torch and "
                        "dlms once)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads in each family (0: torch's default)")
    p.add_argument("--work_dir", default=None, help="keep the runs here (default: a temporary folder, removed)")
    args = p.parse_args(argv)
    size = SIZES["tiny" if args.tiny else "gpu"]
    budget = args.budget_s if args.budget_s is not None else (120.0 if args.tiny else 360.0)
    family_timeout = args.family_timeout_s if args.family_timeout_s is not None else (60.0 if args.tiny else 150.0)

    from dlms.methods import METHODS  # light: no CUDA is touched in this process

    known = [*METHODS.names(), "dglm"]
    families = known if args.families == "all" else [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = [f for f in families if f not in known]
    if unknown:
        print(f"error: unknown family '{unknown[0]}'; choose from {', '.join(known)}", file=sys.stderr)
        return 2
    if "dglm" in families and "ar" in families:  # DGLM decodes with the ar run
        families = [f for f in families if f != "dglm"] + ["dglm"]

    t0 = time.perf_counter()
    method = args.start_method if args.start_method != "auto" else ("forkserver" if args.device == "cpu" else "spawn")
    ctx = mp.get_context(method)
    if method == "forkserver":  # imported once, in the server; CUDA starts in each child
        ctx.set_forkserver_preload(["__main__", *PRELOAD])
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="dlms-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("DLMS_CACHE_DIR", str(work / "cache"))  # the families share one tokenized corpus
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")  # is_available() without initialising CUDA
    failed = False
    try:
        header = run_task(ctx, "peak", args, size, work, min(120.0, budget))
        peak = header.get("bf16_matmul_tflops")
        print(json.dumps({"check": "gpu_check", "device": args.device, "size": "tiny" if args.tiny else "gpu",
                          **header}), flush=True)
        failed = not header.get("ok")
        for family in families:
            remaining = budget - (time.perf_counter() - t0)
            if family == "dglm" and "ar" not in families:
                record = {SKIPPED: "DGLM needs the ar family's run as its decoder; include ar in --families"}
            elif remaining < MIN_FAMILY_S:
                record = {"ok": False,
                          "error": f"not run: the wall-clock budget of {budget:.0f} s (--budget_s) was spent"}
            else:
                record = run_task(ctx, family, args, size, work, min(family_timeout, remaining))
            record = {"family": family, **record}
            if finite(peak) and finite(record.get("achieved_tflops")) and peak > 0:
                record["mfu"] = sig(record["achieved_tflops"] / peak, 3)
                if finite(record.get("counted_tflops")):
                    record["mfu_counted"] = sig(record["counted_tflops"] / peak, 3)
            elif record.get("ok") and family != "dglm":
                record["mfu"] = None
            failed |= SKIPPED not in record and not record.get("ok")
            print(json.dumps(record), flush=True)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"gpu_check: {'FAILED' if failed else 'ok'} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
