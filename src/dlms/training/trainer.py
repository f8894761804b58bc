"""The training loop: explicit, method-agnostic, resumable exactly.

`Trainer(cfg).train()` asks the method for a loss on each batch; it never knows which method
it is training. Every optimiser step draws its noise from a generator seeded by
(seed, rank, step), so an interrupted and resumed run repeats the uninterrupted one exactly.
"""
from __future__ import annotations

import math
import os
import time
from contextlib import nullcontext
from copy import deepcopy
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from ..assembly import (autocast_context, backbone_tokenizer, dataset_from_config, precision_note, resolve_precision,
                        resolve_run_config, special_tokens)
from ..backbones import build_backbone
from ..config import RunConfig, load_config, save_config
from ..data import BatchIterator
from ..errors import CheckpointError, TrainingDiverged
from ..eval.likelihood import evaluate_likelihood
from ..methods import build_method
from .checkpoint import (find_checkpoint, load_weights, read_config, read_optimizer_state, read_tensors,
                         read_trainer_state, save_checkpoint, truncate_metrics)
from .distributed import barrier, init_distributed, mean_across, resolve_device, shutdown
from .ema import EMA
from .optim import build_optimizer, build_scheduler
from .progress import MetricsLog, TrainingProgress


class Trainer:
    """Trains one model described by a RunConfig (or a path to its YAML file)."""

    def __init__(self, cfg: RunConfig | str | Path, dataset=None):
        if not isinstance(cfg, RunConfig):
            cfg = load_config(cfg)
        cfg = backbone_tokenizer(cfg)  # a pretrained backbone is found first and brings its tokenizer
        self.device = resolve_device(cfg.train.device, int(os.environ.get("LOCAL_RANK", "0")))
        self.dist = init_distributed(self.device)
        if self.dist.enabled and dataset is None and not self.dist.is_main:
            barrier(self.dist)  # let the main process tokenize and cache first
        self.dataset = dataset if dataset is not None else dataset_from_config(cfg.data)
        if self.dist.enabled and dataset is None and self.dist.is_main:
            barrier(self.dist)
        self.method = build_method(cfg.method, special_tokens(self.dataset.tokenizer))
        self.cfg = resolve_run_config(cfg, self.method, self.dataset.label_names)
        # Saved resolved: the run trains, resumes and samples in the precision it was started with.
        self.precision_note = precision_note(self.device, cfg.train.precision)
        self.cfg = replace(self.cfg, train=replace(self.cfg.train,
                                                   precision=resolve_precision(self.device, cfg.train.precision)))
        torch.manual_seed(self.cfg.train.seed)  # the same initial weights in every process
        self.model = build_backbone(self.cfg.model, self.method.special.vocab_size).to(self.device)
        if hasattr(self.method, "prepare_backbone"):  # e.g. frozen embeddings: before DDP and the optimizer
            self.method.prepare_backbone(self.model)
        self.train_model = (DistributedDataParallel(self.model) if self.dist.enabled else self.model)
        t = self.cfg.train
        self.loader = BatchIterator(self.dataset.train, t.batch_size, seed=t.seed, rank=self.dist.rank,
                                    world_size=self.dist.world_size, label_column=self.cfg.data.label_column)
        if t.num_epochs is not None:
            self.total_steps = max(1, math.ceil(t.num_epochs * self.loader.steps_per_epoch / t.grad_accum))
        else:
            self.total_steps = t.max_steps
        self.optimizer = build_optimizer(self.model, t)
        self.scheduler = build_scheduler(self.optimizer, t, self.total_steps)
        self.ema = EMA(self.model, t.ema_decay) if t.ema_decay > 0 else None
        self.step = 0
        self.best_val = float("inf")
        self.evals_since_best = 0
        self.run_dir = Path(t.out_dir)
        self.metrics = MetricsLog(self.run_dir / "metrics.jsonl", self.dist.is_main)
        self.autocast = autocast_context(self.device, t.precision)
        self.tokens_per_step = t.batch_size * t.grad_accum * self.dist.world_size * self.cfg.data.seq_len

    # ------------------------------------------------------------------ resume
    @classmethod
    def resume(cls, run_dir: str | Path, max_steps: int | None = None) -> "Trainer":
        """A trainer that continues the run in `run_dir` exactly where its last checkpoint stopped."""
        ckpt = find_checkpoint(run_dir)
        state = read_trainer_state(ckpt)
        cfg = read_config(ckpt)
        if max_steps is not None:
            cfg.train.max_steps = max_steps
            cfg.train.num_epochs = None
        cfg.train.out_dir = str(Path(run_dir))
        trainer = cls(cfg)
        if state["method"] != trainer.method.name:
            raise CheckpointError(f"checkpoint '{ckpt}' is of method '{state['method']}', not '{trainer.method.name}'")
        load_weights(trainer.model, read_tensors(ckpt / "model.safetensors"), ckpt)
        if trainer.ema is not None and (ckpt / "ema.safetensors").exists():
            trainer.ema.load_state_dict(read_tensors(ckpt / "ema.safetensors"))
        opt = read_optimizer_state(ckpt)
        trainer.optimizer.load_state_dict(opt["optimizer"])
        trainer.scheduler.load_state_dict(opt["scheduler"])
        if "torch_rng" in opt:
            torch.set_rng_state(opt["torch_rng"])
        trainer.step = int(state["step"])
        trainer.best_val = float(state.get("best_val", float("inf")))
        trainer.evals_since_best = int(state.get("evals_since_best", 0))
        trainer.loader.load_state_dict(state["data"])
        if trainer.dist.is_main:
            truncate_metrics(trainer.run_dir, trainer.step)
        return trainer

    # ------------------------------------------------------------------ loop
    def train(self) -> dict[str, Any]:
        """Run until the configured number of steps; returns a summary of the run."""
        t = self.cfg.train
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(self.cfg, self.run_dir / "config.yaml")
        self.train_model.train()
        last_loss, window_start, window_tokens = float("nan"), time.perf_counter(), 0
        tokens_per_s = 0.0
        with TrainingProgress(self.total_steps, self.step, t.progress and self.dist.is_main) as progress:
            progress.log(f"training {self.method.name} ({sum(p.numel() for p in self.model.parameters()):,} parameters) "
                         f"for {self.total_steps} steps on {self.device}, precision {self.precision_note}, "
                         f"{len(self.dataset.train):,} training rows")
            while self.step < self.total_steps:
                metrics = self._optimizer_step()
                self.step += 1
                last_loss = metrics["loss"]
                window_tokens += self.tokens_per_step
                if self.step % t.log_every == 0 or self.step == self.total_steps:
                    elapsed = time.perf_counter() - window_start
                    tokens_per_s = window_tokens / max(elapsed, 1e-9)
                    window_start, window_tokens = time.perf_counter(), 0
                    self.metrics.write({"step": self.step, "epoch": self.loader.epoch, **metrics,
                                        "lr": self.scheduler.get_last_lr()[0], "tokens_per_s": tokens_per_s})
                progress.update(self.step, last_loss, tokens_per_s)
                final = self.step == self.total_steps
                stop = False
                if self.step % t.eval_every == 0 or final:
                    val = self.validate()
                    progress.log(f"step {self.step}: train loss {last_loss:.4f}, "
                                 f"val nll {val['nll']:.4f} (ppl {'<=' if val['bound'] else ''}{val['ppl']:.2f})")
                    stop = 0 < t.early_stop_patience <= self.evals_since_best
                if self.step % t.save_every == 0 or final or stop:
                    self.save()
                if stop:
                    progress.log(f"step {self.step}: no new best validation NLL in {t.early_stop_patience} "
                                 "validations, stopping early (train.early_stop_patience)")
                    break
        if self.dist.is_main:
            progress.log(f"saved {self.run_dir}")
        return {"step": self.step, "loss": last_loss, "best_val": self.best_val, "run_dir": str(self.run_dir),
                "stopped_early": self.step < self.total_steps}

    def _optimizer_step(self) -> dict[str, float]:
        t = self.cfg.train
        # Noise of this step depends only on (seed, rank, step): exact resume without RNG bookkeeping.
        torch.manual_seed(t.seed * 1_000_003 + self.dist.rank * 10_007 + self.step)
        totals: dict[str, float] = {}
        loss_sum = torch.zeros((), device=self.device)
        for micro in range(t.grad_accum):
            batch = self._next_batch()
            sync = micro == t.grad_accum - 1 or not self.dist.enabled
            context = self.train_model.no_sync() if not sync else nullcontext()
            with context:
                with self.autocast:
                    out = self.method.loss(self.train_model, batch)
                (out.loss / t.grad_accum).backward()
            loss_sum += out.loss.detach().float()
            for k, v in out.metrics.items():
                totals[k] = totals.get(k, 0.0) + v / t.grad_accum
        loss = mean_across(loss_sum / t.grad_accum, self.dist)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
        if not (torch.isfinite(loss) and torch.isfinite(grad_norm)):
            self.optimizer.zero_grad(set_to_none=True)
            raise TrainingDiverged(
                f"the loss became {loss.item()} at step {self.step + 1}; the last good checkpoint in "
                f"'{self.run_dir}' was kept. Lower train.learning_rate or use train.precision=fp32, then resume")
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.model)
        totals["loss"] = loss.item()
        totals["grad_norm"] = grad_norm.item()
        return totals

    def _next_batch(self) -> dict[str, torch.Tensor]:
        batch = next(self.loader)
        batch = {k: (v.to(self.device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
        labels = batch.get("labels")
        if labels is not None and self.cfg.train.cond_drop_prob > 0:
            # Drop labels to the null class so the same network also learns the unconditional model.
            drop = torch.rand(labels.shape, device=labels.device) < self.cfg.train.cond_drop_prob
            batch["labels"] = torch.where(drop, torch.full_like(labels, self.model.null_class), labels)
        return batch

    # ------------------------------------------------------------------ eval and save
    def eval_model(self) -> torch.nn.Module:
        """The weights to evaluate and sample: the EMA weights when kept, else the live ones."""
        if self.ema is None:
            return self.model
        copy = deepcopy(self.model)  # not rebuilt: a pretrained backbone would be loaded again
        copy.load_state_dict({k: v.to(copy.state_dict()[k].dtype) for k, v in self.ema.state_dict().items()})
        return copy

    def validate(self) -> dict[str, float]:
        """A fixed-seed estimate of the validation NLL (bound), logged to metrics.jsonl."""
        t = self.cfg.train
        model = self.eval_model()
        result = evaluate_likelihood(self.method, model, self.dataset.val, batch_size=t.batch_size, passes=t.eval_passes,
                                     seed=self.cfg.eval.seed, max_sequences=t.eval_batches * t.batch_size,
                                     label_column=self.cfg.data.label_column, autocast=self.autocast)
        self.train_model.train()
        if result["nll"] < self.best_val and self.dist.is_main:
            # The best weights so far, for studies that pick the best epoch (evaluation only).
            save_checkpoint(self.run_dir, cfg=self.cfg, model=model, tokenizer=self.dataset.tokenizer,
                            trainer_state={"method": self.method.name, "step": self.step, "best_val": result["nll"],
                                           "label_names": self.dataset.label_names, "data": {}},
                            name="best")
        self.evals_since_best = 0 if result["nll"] < self.best_val else self.evals_since_best + 1
        self.best_val = min(self.best_val, result["nll"])
        self.metrics.write({"step": self.step, "epoch": self.loader.epoch, "val_nll": result["nll"],
                            "val_ppl": result["ppl"], "val_se": result["se"], "val_bound": result["bound"]})
        return result

    def save(self) -> None:
        if self.dist.is_main:
            optimizer_state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                               "torch_rng": torch.get_rng_state()}
            state = {"method": self.method.name, "step": self.step, "epoch": self.loader.epoch,
                     "data": self.loader.state_dict(), "best_val": self.best_val,
                     "evals_since_best": self.evals_since_best,
                     "label_names": self.dataset.label_names, "layout": self.cfg.data.layout,
                     "total_steps": self.total_steps, "world_size": self.dist.world_size}
            save_checkpoint(self.run_dir, cfg=self.cfg, model=self.model, tokenizer=self.dataset.tokenizer,
                            trainer_state=state, optimizer_state=optimizer_state,
                            ema_state=self.ema.state_dict() if self.ema else None)
        barrier(self.dist)

    def close(self) -> None:
        shutdown(self.dist)

