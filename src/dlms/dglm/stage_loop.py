"""How DGLM's trained stages (latent diffusion, decoder) run their steps: through the one
optimiser step every run shares (`training.step.StepRunner`: AdamW with warmup and cosine decay,
precision, clipping, the NaN stop, the moving average of the weights).

What is the stage's own: its batches (`loss_fn(generator)`), its held-out loss, and its folder
(`save`, written atomically by the stage). A checkpoint every `save_every` steps and at the end
holds the averaged weights when `ema_decay > 0` (what is sampled; the raw weights travel with the
optimizer state for resume). Exact resume: step k draws its batch and noise from a generator
seeded by (seed, k), so an interrupted run continued from its checkpoint repeats the
uninterrupted one (the global generator, which dropout draws from, is seeded the same way).
A NaN or infinite loss stops the stage before anything is overwritten.
`precision` "bf16" runs each forward and loss (training and held-out) under bf16 autocast;
the weights, their gradients and the optimizer state stay float32.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError, TrainingDiverged
from ..methods import LossOutput
from ..training.distributed import DistInfo, barrier
from ..training.optim import OptimizerSettings
from ..training.progress import MetricsLog, TrainingProgress
from ..training.step import NotFinite, StepRunner
from ..assembly import resolve_precision
from .config import StageTrainConfig

MIN_LR_RATIO = 0.1


def step_seed(seed: int, step: int, rank: int = 0) -> int:
    """The seed of step `step` in process `rank`: every process draws its own batches."""
    return seed * 1_000_003 + rank * 10_007 + step


def step_generator(seed: int, step: int, device: torch.device, rank: int = 0) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(step_seed(seed, step, rank))


class StageLoss(nn.Module):
    """A stage's model with its loss of one batch as `forward(generator)`: what DDP wraps, so
    that the gradients of every process are averaged when the loss runs through the wrapper."""

    def __init__(self, model: nn.Module, loss_fn: Callable[[torch.Generator], torch.Tensor]):
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, generator: torch.Generator) -> torch.Tensor:
        return self.loss_fn(generator)


def stage_settings(cfg: StageTrainConfig) -> OptimizerSettings:
    """The optimiser step's settings of a stage's config (AdamW's default betas)."""
    return OptimizerSettings(learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay,
                             warmup_steps=cfg.warmup_steps, min_lr_ratio=MIN_LR_RATIO, grad_clip=cfg.grad_clip,
                             grad_accum=cfg.grad_accum, ema_decay=cfg.ema_decay)


def train_stage(*, name: str, cfg: StageTrainConfig, model: nn.Module,
                param_groups: Callable[[nn.Module], list[dict[str, Any]]],
                loss_fn: Callable[[torch.Generator], torch.Tensor], save: Callable[[dict, dict], None],
                val_fn: Callable[[], float], device: torch.device, seed: int, metrics: MetricsLog,
                progress: TrainingProgress | None = None, units_per_step: int = 0,
                resume: tuple[dict, dict | None] = ({}, None), log: Callable[[str], None] = print,
                precision: str = "fp32", dist: DistInfo = DistInfo()) -> dict[str, Any]:
    """Run steps [start, cfg.steps) of one stage and return its last progress record.

    `param_groups(model)`: what trains, as AdamW groups (a group may set its own `lr`).
    `loss_fn(generator)`: the loss of one batch drawn with that generator (called `grad_accum`
    times a step with the step's generator, which draws a new batch each time). `save(progress,
    optimizer_state)`: write the stage's checkpoint. `resume`: (progress, optimizer state) of a
    previous run of this stage (`stages.read_training_state`); `model` holds the saved (averaged)
    weights when resuming. `precision`: "bf16", "fp32" or "auto" (see `assembly.autocast_context`).
    `dist`: the processes under torchrun (data parallel: each draws its own batches, the gradients
    are averaged, only the main process calls `save` and writes metrics)."""
    resolved = resolve_precision(device, precision)
    wrapped = StageLoss(model, loss_fn)
    runner = StepRunner(wrapped, stage_settings(cfg), cfg.steps, param_groups=lambda w: param_groups(w.model),
                        device=device, precision=resolved, dist=dist, some_unused=True)
    done, state = resume
    start = int(done.get("step", 0))
    if state is not None and start > 0:  # the EMA copy started from the saved average above
        try:
            runner.load_state_dict(state)
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
    running, tic, last_saved = None, time.perf_counter(), start
    with bar:
        for step in range(start, cfg.steps):
            generator = step_generator(seed, step, device, dist.rank)
            torch.manual_seed(step_seed(seed, step, dist.rank))  # dropout draws from the global generator
            try:
                loss = runner.step(lambda stage: LossOutput(stage(generator)))["loss"]
            except NotFinite as bad:
                hint = " or use precision fp32" if resolved == "bf16" else ""
                raise TrainingDiverged(f"{name}: the {bad.what} became {bad.value} at step {step + 1}; the last "
                                       f"checkpoint (step {last_saved}) was kept. Lower {name}.learning_rate{hint} and "
                                       "run again") from None
            running = loss if running is None else 0.95 * running + 0.05 * loss
            elapsed = time.perf_counter() - tic
            bar.update(step + 1, running, units_per_step * (step + 1 - start) / max(elapsed, 1e-9))
            if (step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps:
                state = runner.state_dict()
                if runner.ema is not None:  # validate and save the average; keep the raw weights for resume
                    state["raw_weights"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
                with runner.averaged_weights():
                    with runner.autocast():
                        val = val_fn()
                    record = {"stage": name, "step": step + 1, "steps": cfg.steps, "train_loss": round(running, 5),
                              "val_loss": round(val, 5)}
                    metrics.write(record)
                    log(f"{name} step {step + 1}: train loss {running:.4f}, held-out loss {val:.4f}")
                    if dist.is_main:
                        save(record, state)
                barrier(dist)
                last_saved = step + 1
    return record
