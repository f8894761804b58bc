"""One optimiser step, the same for every run: a `Trainer` run of any family and DGLM's stages.

`StepRunner` owns what turns losses into new weights: the parallel wrapping (DDP or FSDP2,
training/parallel.py), AdamW and its warmup-cosine schedule (training/optim.py), the precision
(bf16 autocast or fp32), gradient accumulation, clipping, the check that the loss and the
gradient norm are finite, and the moving average of the weights (EMA). Its callers own only
what differs between them: where batches come from, when to validate and how to save.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn

from ..assembly import autocast_context, resolve_precision
from ..methods import LossOutput
from .distributed import DistInfo, mean_across
from .ema import EMA
from .optim import OptimizerSettings, build_optimizer, build_scheduler
from .parallel import Parallel, ParallelModel


class NotFinite(Exception):
    """A step's loss or gradient norm was NaN or infinite; nothing was applied to the weights."""

    def __init__(self, what: str, value: float):
        super().__init__(f"the {what} became {value}")
        self.what, self.value = what, value


class StepRunner:
    """Optimiser steps of `model` [on `device`]. `param_groups(model)` lists what trains (called
    after sharding, so FSDP's sharded parameters are the ones optimised); `precision` "bf16" or
    "fp32" (resolved); `total_steps` sizes the learning-rate schedule; `parallel`,
    `activation_checkpointing` and `some_unused`: see training/parallel.py."""

    def __init__(self, model: nn.Module, settings: OptimizerSettings, total_steps: int, *,
                 param_groups: Callable[[nn.Module], list[dict]], device: torch.device, precision: str,
                 dist: DistInfo, parallel: Parallel = "ddp", activation_checkpointing: bool = False,
                 some_unused: bool = False):
        self.settings, self.device, self.precision, self.dist = settings, device, precision, dist
        self.parallel = ParallelModel(model, mode=parallel, dist=dist, bf16=resolve_precision(device, precision) == "bf16",
                                      activation_checkpointing=activation_checkpointing, some_unused=some_unused)
        self.model = model
        self.optimizer = build_optimizer(param_groups(model), settings)
        self.scheduler = build_scheduler(self.optimizer, settings, total_steps)
        self.ema = EMA(model, settings.ema_decay) if settings.ema_decay > 0 else None

    @property
    def train_model(self) -> nn.Module:
        """What a loss calls: the DDP wrapper, or the (sharded) model itself."""
        return self.parallel.train_model

    def autocast(self):
        """A fresh autocast context of the run's precision (autocast objects are not reentrant)."""
        return autocast_context(self.device, self.precision)

    def step(self, micro_loss: Callable[[nn.Module], LossOutput]) -> dict[str, float]:
        """Accumulate `grad_accum` micro-batches (`micro_loss(train_model)` each), clip, and apply
        one update. Returns the logged figures (the micro-batches' mean metrics, `loss` averaged
        over processes, `grad_norm`); raises NotFinite, with the weights untouched, when the loss
        or the gradient norm is not finite."""
        accum = self.settings.grad_accum
        totals: dict[str, float] = {}
        loss_sum = torch.zeros((), device=self.device)
        for micro in range(accum):
            with self.parallel.no_sync(sync=micro == accum - 1):
                with self.autocast():
                    out = micro_loss(self.train_model)
                (out.loss / accum).backward()
            loss_sum += out.loss.detach().float()
            for k, v in out.metrics.items():
                totals[k] = totals.get(k, 0.0) + v / accum
        loss = mean_across(loss_sum / accum, self.dist)
        grad_norm = torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad],
                                                   self.settings.grad_clip)
        grad_norm = _local(grad_norm)
        if not (torch.isfinite(loss) and torch.isfinite(grad_norm)):
            self.optimizer.zero_grad(set_to_none=True)
            what = "loss" if not torch.isfinite(loss) else "gradient norm"
            raise NotFinite(what, (loss if what == "loss" else grad_norm).item())
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.model)
        totals["loss"] = loss.item()
        totals["grad_norm"] = grad_norm.item()
        return totals

    @property
    def learning_rate(self) -> float:
        return self.scheduler.get_last_lr()[0]

    @contextmanager
    def averaged_weights(self) -> Iterator[None]:
        """Inside: the model holds its moving average (what is evaluated and sampled); after:
        its trained weights again. Without EMA, nothing changes."""
        if self.ema is None:
            yield
            return
        raw = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.model.load_state_dict({k: v.to(raw[k].dtype) for k, v in self.ema.state_dict().items()}, strict=False)
        try:
            yield
        finally:
            self.model.load_state_dict(raw)

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict:
        """Optimizer and schedule state (unsharded runs: a plain dict for `torch.save`)."""
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        check_optimizer_state(self.optimizer)


def _local(value: torch.Tensor) -> torch.Tensor:
    """A sharded (DTensor) scalar as a plain tensor: its value is already the global one."""
    from torch.distributed.tensor import DTensor

    return value.full_tensor() if isinstance(value, DTensor) else value


def check_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """ValueError if a loaded optimizer state does not fit the parameters (AdamW's moments must
    have each parameter's shape: load_state_dict does not check that)."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            for name, value in optimizer.state.get(param, {}).items():
                if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != param.shape:
                    raise ValueError(f"optimizer state '{name}' has shape {tuple(value.shape)}, "
                                     f"the parameter {tuple(param.shape)}")
