"""The optimisation loop shared by DGLM's trained stages (latent diffusion, decoder).

AdamW with linear warmup and cosine decay (`training.optim.lr_factor`), gradient clipping, an
optional exponential moving average of the weights (what is saved for sampling; the raw
weights travel with the optimizer state for resume), a progress bar, a checkpoint every
`save_every` steps and at the end (written by the stage's own `save` function, atomically),
and exact resume: step k draws its batch and noise from a
generator seeded by (seed, k), so an interrupted run continued from its checkpoint repeats the
uninterrupted one. A NaN or infinite loss stops the stage before anything is overwritten.
`precision` "bf16" runs each forward and loss (training and held-out) under bf16 autocast;
the weights, their gradients and the optimizer state stay float32.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch

from ..assembly import autocast_context, resolve_precision
from ..errors import CheckpointError, TrainingDiverged
from ..training.ema import EMA
from ..training.optim import lr_factor
from ..training.progress import MetricsLog, TrainingProgress
from .config import StageTrainConfig

MIN_LR_RATIO = 0.1


def step_generator(seed: int, step: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + step)


def train_stage(*, name: str, cfg: StageTrainConfig, model: torch.nn.Module, param_groups: list[dict[str, Any]],
                loss_fn: Callable[[torch.Generator], torch.Tensor], save: Callable[[dict, dict], None],
                val_fn: Callable[[], float], device: torch.device, seed: int, metrics: MetricsLog,
                progress: TrainingProgress | None = None, units_per_step: int = 0,
                resume: tuple[dict, dict | None] = ({}, None), log: Callable[[str], None] = print,
                precision: str = "fp32") -> dict[str, Any]:
    """Run steps [start, cfg.steps) of one stage and return its last progress record.

    `loss_fn(generator)`: the loss of one batch drawn with that generator. `save(progress,
    optimizer_state)`: write the stage's checkpoint. `resume`: (progress, optimizer state) of a
    previous run of this stage (`stages.read_training_state`); `model` holds the saved (averaged)
    weights when resuming. `precision`: "bf16", "fp32" or "auto" (see `assembly.autocast_context`)."""
    params = [p for group in param_groups for p in group["params"]]
    optimizer = torch.optim.AdamW(param_groups, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    warmup = min(cfg.warmup_steps, max(1, cfg.steps // 2))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, warmup, cfg.steps, MIN_LR_RATIO))
    done, state = resume
    start = int(done.get("step", 0))
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None  # starts from the saved average on resume
    if state is not None and start > 0:
        try:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if "raw_weights" in state:
                model.load_state_dict(state["raw_weights"])
        except (KeyError, ValueError, RuntimeError, TypeError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise CheckpointError(f"{name}: the saved training state does not fit this config ({first}); train with "
                                  "the settings the stage was started with, or delete the stage's folder to train it "
                                  "again") from None
    record: dict[str, Any] = dict(done)
    if start >= cfg.steps:
        log(f"{name}: already trained ({start} steps); delete its folder to train it again")
        return record
    if start:
        log(f"{name}: resuming at step {start} of {cfg.steps}")
    bar = progress or TrainingProgress(cfg.steps, start, enabled=True, description=name)

    def autocast():  # a fresh context each time (autocast objects are not reentrant)
        return autocast_context(device, precision)

    running, tic, last_saved = None, time.perf_counter(), start
    with bar:
        for step in range(start, cfg.steps):
            with autocast():
                loss = loss_fn(step_generator(seed, step, device))
            if not math.isfinite(loss.item()):
                hint = " or use precision fp32" if resolve_precision(device, precision) == "bf16" else ""
                raise TrainingDiverged(f"{name}: the loss became {loss.item()} at step {step + 1}; the last checkpoint "
                                       f"(step {last_saved}) was kept. Lower {name}.learning_rate{hint} and run again")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            if ema is not None:
                ema.update(model)
            running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
            elapsed = time.perf_counter() - tic
            bar.update(step + 1, running, units_per_step * (step + 1 - start) / max(elapsed, 1e-9))
            if (step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps:
                state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
                if ema is not None:  # validate and save the average; keep the raw weights for resume
                    state["raw_weights"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
                    model.load_state_dict({k: v.to(state["raw_weights"][k].dtype) for k, v in ema.state_dict().items()},
                                          strict=False)
                with autocast():
                    val = val_fn()
                record = {"stage": name, "step": step + 1, "steps": cfg.steps, "train_loss": round(running, 5),
                          "val_loss": round(val, 5)}
                metrics.write(record)
                log(f"{name} step {step + 1}: train loss {running:.4f}, held-out loss {val:.4f}")
                save(record, state)
                if ema is not None:
                    model.load_state_dict(state["raw_weights"])
                last_saved = step + 1
    return record
