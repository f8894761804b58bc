"""The training loop: explicit, method-agnostic, resumable exactly.

`Trainer(cfg).train()` asks the method for a loss on each batch; it never knows which method
it is training. An `objective` may replace the method's loss (e.g. distillation against a frozen
teacher, dlms/distill); the rest (optimiser, precision, EMA, checkpoints, resume) stays the same.
Every optimiser step draws its noise from a generator seeded by (seed, rank, step), so an
interrupted and resumed run repeats the uninterrupted one exactly.
"""
from __future__ import annotations

import math
import os
import shutil
import time
from copy import deepcopy
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import torch

from ..assembly import (autocast_context, backbone_tokenizer, dataset_from_config, precision_note, resolve_precision,
                        resolve_run_config, special_tokens)
from ..backbones import build_backbone
from ..checks import check_int
from ..config import RunConfig, TrainConfig, load_config, save_config
from ..data import BatchIterator
from ..errors import ArgumentError, CheckpointError, ConfigError, TrainingDiverged, literal
from ..likelihood import evaluate_likelihood
from ..methods import LossOutput, build_method
from ..methods.base import PROMPT_DROPPED, PROMPT_LEN
from ..checkpoint import (find_checkpoint, load_weights, read_config, read_optimizer_state, read_tensors,
                         read_trainer_state, save_checkpoint, truncate_metrics)
from ..devices import resolve_device
from .distributed import barrier, init_distributed, shutdown
from .init_from import inherit_architecture, init_weights as load_init_weights, read_init_source
from .optim import OptimizerSettings, decay_groups
from .progress import MetricsLog, TrainingProgress
from .sharded_checkpoint import SHARDED, load_sharded, save_sharded
from .step import NotFinite, StepRunner
from ..paths import check_writable
from ..run_folder import RunLock, clear_run, describe_run, ensure_free, make_run_folder, tidy


# objective(model, batch) -> LossOutput: what a Trainer minimises instead of `method.loss`.
Objective = Callable[[torch.nn.Module, dict], LossOutput]


class Trainer:
    """Trains one model described by a RunConfig (or a path to its YAML file)."""

    def __init__(self, cfg: RunConfig | str | Path, dataset=None, *, overwrite: bool = False, resuming: bool = False,
                 objective: Objective | None = None, init_weights: dict[str, torch.Tensor] | None = None):
        """`overwrite`: replace a run already in `train.out_dir` (else that is an error: use
        `Trainer.resume` to continue it). `resuming` is set by `Trainer.resume`.
        `objective(model, batch) -> LossOutput` replaces `method.loss(model, batch)` (it is called
        under the run's autocast with the trainable model, DDP-wrapped when distributed);
        `init_weights`: a state dict the model starts from instead of its random initialisation
        (loaded before the optimizer and the EMA copy are made). `cfg.train.init_from` starts from
        another run's weights and tokenizer instead (see training/init_from.py)."""
        self.objective = objective
        if not isinstance(cfg, RunConfig):
            cfg = load_config(cfg)
        self.run_dir = Path(cfg.train.out_dir)
        self.overwrite, self.resuming = overwrite, resuming
        self.notes: list[str] = []  # logged when training starts
        # The run to start from is read first (a missing one fails before any data work); a resumed
        # run already holds its weights and the inherited architecture.
        self.init_source = None
        if cfg.train.init_from is not None and not resuming:
            if init_weights is not None:
                raise ConfigError("init_weights and train.init_from both give the starting weights; pass one")
            self.init_source = read_init_source(cfg.train.init_from, cfg.train.out_dir)
            cfg = inherit_architecture(cfg, self.init_source)
        cfg = backbone_tokenizer(cfg)  # a pretrained backbone is found first and brings its tokenizer
        self.device = resolve_device(cfg.train.device, int(os.environ.get("LOCAL_RANK", "0")))
        self.dist = init_distributed(self.device)
        if self.dist.is_main:  # before any data work: a run folder that cannot be used fails at once
            self._check_run_folder()
        if self.dist.enabled and dataset is None and not self.dist.is_main:
            barrier(self.dist)  # let the main process tokenize and cache first
        self.dataset = dataset if dataset is not None else dataset_from_config(cfg.data, tokenizer=self._tokenizer(cfg))
        if self.dist.enabled and dataset is None and self.dist.is_main:
            barrier(self.dist)
        # seq_len null (fit the data) becomes the number the data builder chose; the run saves it.
        self.seq_len_note = getattr(self.dataset, "seq_len_note", None) if cfg.data.seq_len is None else None
        self.notes += getattr(self.dataset, "notes", [])  # e.g. prompt/response rows cut to fit
        cfg = replace(cfg, data=replace(cfg.data, seq_len=self.dataset.seq_len))
        self.method = build_method(cfg.method, special_tokens(self.dataset.tokenizer))
        self.cfg = resolve_run_config(cfg, self.method, self.dataset.label_names)
        # Saved resolved: the run trains, resumes and samples in the precision it was started with.
        self.precision_note = precision_note(self.device, cfg.train.precision)
        self.cfg = replace(self.cfg, train=replace(self.cfg.train,
                                                   precision=resolve_precision(self.device, cfg.train.precision)))
        torch.manual_seed(self.cfg.train.seed)  # the same initial weights in every process
        # Started from a run: a pretrained backbone is rebuilt from the architecture saved there.
        source_ckpt = self.init_source.ckpt if self.init_source is not None else None
        self.model = build_backbone(self.cfg.model, self.method.special.vocab_size, source_ckpt).to(self.device)
        if init_weights is not None:
            load_weights(self.model, init_weights, Path("init_weights"))
        if self.init_source is not None:
            self.notes.append(load_init_weights(self.model, self.init_source, self.method.name))
        self.method.prepare_backbone(self.model)  # e.g. frozen embeddings: before DDP and the optimizer
        t = self.cfg.train
        self.loader = BatchIterator(self.dataset.train, t.batch_size, seed=t.seed, rank=self.dist.rank,
                                    world_size=self.dist.world_size, label_column=self.cfg.data.label_column)
        if t.num_epochs is not None:
            self.total_steps = max(1, math.ceil(t.num_epochs * self.loader.steps_per_epoch / t.grad_accum))
        else:
            self.total_steps = t.max_steps
        # Wrapping (DDP or FSDP), optimizer, schedule, precision, clipping, accumulation, EMA: the
        # same step as every run's, DGLM's stages included (training/step.py).
        self.steps = StepRunner(self.model, optimizer_settings(t), self.total_steps,
                                param_groups=lambda model: decay_groups(model, t.weight_decay), device=self.device,
                                precision=t.precision, dist=self.dist, parallel=t.parallel,
                                activation_checkpointing=t.activation_checkpointing)
        self.optimizer, self.scheduler, self.ema = self.steps.optimizer, self.steps.scheduler, self.steps.ema
        self.train_model = self.steps.train_model
        if self.dist.enabled:
            self.notes.append(f"{self.dist.world_size} processes, {'sharded (fsdp)' if self.steps.parallel.sharded else 'replicated (ddp)'}"
                              + (", activation checkpointing" if t.activation_checkpointing else ""))
        elif t.parallel == "fsdp":
            self.notes.append("train.parallel=fsdp in one process: nothing to shard, the model trains whole "
                              "(start it with torchrun --nproc_per_node N to shard it)")
        self.step = 0
        self.last_saved_step = 0
        self.best_val = float("inf")
        self.evals_since_best = 0
        self.lock = RunLock(self.run_dir)
        self.metrics = MetricsLog(self.run_dir / "metrics.jsonl", self.dist.is_main)
        self.autocast = autocast_context(self.device, t.precision)
        self.tokens_per_step = t.batch_size * t.grad_accum * self.dist.world_size * self.cfg.data.seq_len

    def _tokenizer(self, cfg: RunConfig):
        """The tokenizer object the data is built with: the starting run's (`train.init_from`), or
        on resume this run's own saved one; None: the configured one (data.tokenizer, or a BPE)."""
        if self.init_source is not None:
            return self.init_source.tokenizer
        if cfg.train.init_from is not None and self.resuming:
            from ..data import load_tokenizer

            return load_tokenizer(str(find_checkpoint(self.run_dir) / "tokenizer"))
        return None

    # ------------------------------------------------------------------ resume
    @classmethod
    def resume(cls, run_dir: str | Path, max_steps: int | None = None, *, dataset=None,
               objective: Objective | None = None) -> "Trainer":
        """A trainer that continues the run in `run_dir` exactly where its last checkpoint stopped.
        `dataset` and `objective`: as for `Trainer(...)` (a run trained with an objective resumes with it)."""
        ckpt = find_checkpoint(run_dir)
        state = read_trainer_state(ckpt)
        cfg = read_config(ckpt)
        if max_steps is not None:
            cfg.train.max_steps = max_steps
            cfg.train.num_epochs = None
        cfg.train.out_dir = str(Path(run_dir))
        check_int("max_steps", max_steps, 1)
        step = state.get("step")
        if not isinstance(step, int) or isinstance(step, bool) or step < 0 or not isinstance(state.get("data"), dict):
            said = (f"checkpoint '{ckpt}' is damaged (trainer_state.json has no valid step or data position); "
                    "resume from another checkpoint or start again")
            raise CheckpointError(f"{said} (overwrite=True)", cli=f"{said} with --overwrite")
        if cfg.train.num_epochs is None:  # known before any data work
            _check_steps_left(run_dir, step, cfg.train.max_steps, max_steps)
        trainer = cls(cfg, dataset, resuming=True, objective=objective)
        if state["method"] != trainer.method.name:
            raise CheckpointError(f"checkpoint '{ckpt}' is of method '{state['method']}', not '{trainer.method.name}'")
        _check_steps_left(run_dir, step, trainer.total_steps, max_steps)
        _check_parallel(ckpt, state, trainer.steps.parallel.sharded)
        if not trainer.steps.parallel.sharded:  # a sharded run reads its own shards below
            load_weights(trainer.model, read_tensors(ckpt / "model.safetensors"), ckpt)
        try:
            opt = read_optimizer_state(ckpt)
            if trainer.steps.parallel.sharded:
                load_sharded(ckpt / SHARDED, trainer.model, trainer.optimizer,
                             trainer.ema.state_dict() if trainer.ema is not None else None)
                trainer.scheduler.load_state_dict(opt["scheduler"])
            else:
                if trainer.ema is not None and (ckpt / "ema.safetensors").exists():
                    trainer.ema.load_state_dict(read_tensors(ckpt / "ema.safetensors"))
                trainer.steps.load_state_dict(opt)
            if "torch_rng" in opt:
                torch.set_rng_state(opt["torch_rng"])
            trainer.loader.load_state_dict(state["data"])
            best = state.get("best_val")  # null: no validation yet
            trainer.best_val = float("inf") if best is None else float(best)
            trainer.evals_since_best = int(state.get("evals_since_best", 0))
        except CheckpointError:
            raise
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as exc:
            said = (f"checkpoint '{ckpt}' does not fit this run ({type(exc).__name__}: "
                    f"{str(exc).splitlines()[0] if str(exc) else 'bad state'}); resume from another checkpoint or "
                    "start again")
            raise CheckpointError(f"{said} (overwrite=True)", cli=f"{said} with --overwrite") from None
        trainer.step = trainer.last_saved_step = step
        return trainer

    # ------------------------------------------------------------------ loop
    def train(self) -> dict[str, Any]:
        """Run until the configured number of steps; returns a summary of the run."""
        notes = self._take_run_folder() if self.dist.is_main else []
        try:
            return self._train_loop(notes)
        finally:
            self.lock.release()

    def _train_loop(self, notes: list[str]) -> dict[str, Any]:
        t = self.cfg.train
        self.train_model.train()
        last_loss, window_start, window_tokens = float("nan"), time.perf_counter(), 0
        tokens_per_s = 0.0
        with TrainingProgress(self.total_steps, self.step, t.progress and self.dist.is_main) as progress:
            progress.log(f"training {self.method.name} ({sum(p.numel() for p in self.model.parameters()):,} parameters) "
                         f"for {self.total_steps} steps on {self.device}, precision {self.precision_note}, "
                         f"{len(self.dataset.train):,} training rows")
            described = getattr(self.objective, "description", None)
            shown = [self.seq_len_note] if self.seq_len_note else []
            for note in shown + self.notes + ([described] if described else []) + notes:
                progress.log(note)
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
                                        "lr": self.steps.learning_rate, "tokens_per_s": tokens_per_s})
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
        # The notes (rows cut to fit, the run started from) also when the progress output is off.
        return {"step": self.step, "loss": last_loss, "best_val": self.best_val, "run_dir": str(self.run_dir),
                "stopped_early": self.step < self.total_steps, "notes": list(self.notes)}

    def _optimizer_step(self) -> dict[str, float]:
        t = self.cfg.train
        # Noise of this step depends only on (seed, rank, step): exact resume without RNG bookkeeping.
        torch.manual_seed(t.seed * 1_000_003 + self.dist.rank * 10_007 + self.step)
        objective = self.objective or self.method.loss
        try:
            return self.steps.step(lambda model: objective(model, self._next_batch()))
        except NotFinite as bad:
            raise self._diverged(bad) from None

    def _diverged(self, bad: NotFinite) -> TrainingDiverged:
        """The one error line of a step whose loss or gradient norm was not finite: which checkpoint
        was kept, and how to go on."""
        said = f"the {bad.what} became {bad.value} at step {self.step + 1}; "
        fix = "Lower train.learning_rate or use train.precision=fp32, then"
        if self.last_saved_step > 0:
            kept = f"the last good checkpoint (step {self.last_saved_step}) in '{self.run_dir}' was kept. {fix}"
            return TrainingDiverged(f"{said}{kept} resume it with Trainer.resume('{self.run_dir}')",
                                    cli=f"{said}{kept} resume with --resume {self.run_dir}")
        kept = f"no checkpoint had been saved yet (the first save comes at step {self.cfg.train.save_every}). {fix}"
        return TrainingDiverged(f"{said}{kept} train again with overwrite=True",
                                cli=f"{said}{kept} train again with --overwrite")

    def _next_batch(self) -> dict[str, torch.Tensor]:
        batch = next(self.loader)
        batch = {k: (v.to(self.device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
        labels = batch.get("labels")
        if labels is not None and self.cfg.train.cond_drop_prob > 0:
            # Drop labels to the null class so the same network also learns the unconditional model.
            drop = torch.rand(labels.shape, device=labels.device) < self.cfg.train.cond_drop_prob
            batch["labels"] = torch.where(drop, torch.full_like(labels, self.model.null_class), labels)
        if batch.get(PROMPT_LEN) is not None and self.cfg.train.prompt_drop_prob > 0:
            # The same for prompts: rows the method shows without their prompt (methods/base.py), so
            # the network also learns the unconditional branch of guidance on the prompt. Drawn
            # from the step's seeded generator, like the method's noise: a resumed run repeats it.
            rows = batch["input_ids"].shape[0]
            batch[PROMPT_DROPPED] = torch.rand(rows, device=self.device) < self.cfg.train.prompt_drop_prob
        return batch

    # ------------------------------------------------------------------ eval and save
    def eval_model(self) -> torch.nn.Module:
        """The weights to evaluate and sample: the EMA weights when kept, else the live ones (a
        copy, whole, of a sharded model: collective, every process calls it)."""
        if self.ema is None and not self.steps.parallel.sharded:
            return self.model
        with self.steps.averaged_weights():
            weights = self.steps.parallel.full_state_dict(everywhere=True)
        source_ckpt = self.init_source.ckpt if self.init_source is not None else None
        # A sharded model cannot be copied, so it is rebuilt (on CPU first: a pretrained backbone is
        # rebuilt from its saved architecture where it can be, else loaded again).
        copy = (build_backbone(self.cfg.model, self.method.special.vocab_size, source_ckpt) if self.steps.parallel.sharded
                else deepcopy(self.model))
        copy.load_state_dict({k: v.to(copy.state_dict()[k].dtype) for k, v in weights.items()})
        return copy.to(self.device)

    def validate(self) -> dict[str, float]:
        """A fixed-seed estimate of the validation NLL (bound), logged to metrics.jsonl."""
        t = self.cfg.train
        with self.steps.averaged_weights():
            result = evaluate_likelihood(self.method, self.model, self.dataset.val,
                                         batch_size=t.batch_size, passes=t.eval_passes, seed=self.cfg.eval.seed,
                                         max_sequences=t.eval_batches * t.batch_size,
                                         label_column=self.cfg.data.label_column, autocast=self.autocast)
            best = result["nll"] < self.best_val
            weights = self.steps.parallel.full_state_dict() if best else None  # collective under FSDP
        self.train_model.train()
        if best and self.dist.is_main:
            # The best weights so far, for studies that pick the best epoch (evaluation only).
            save_checkpoint(self.run_dir, cfg=self.cfg, model=self.model, tokenizer=self.dataset.tokenizer,
                            trainer_state={"method": self.method.name, "step": self.step, "best_val": result["nll"],
                                           "label_names": self.dataset.label_names, "data": {}},
                            name="best", weights=weights)
        self.evals_since_best = 0 if best else self.evals_since_best + 1
        self.best_val = min(self.best_val, result["nll"])
        self.metrics.write({"step": self.step, "epoch": self.loader.epoch, "val_nll": result["nll"],
                            "val_ppl": result["ppl"], "val_se": result["se"], "val_bound": result["bound"]})
        return result

    def save(self) -> None:
        """Write the checkpoint atomically. A sharded run first gathers its whole weights (what
        one process loads) and writes every process's shards (what it resumes from)."""
        sharded, weights, ema_state = None, None, self.ema.state_dict() if self.ema else None
        if self.steps.parallel.sharded:
            weights = self.steps.parallel.full_state_dict()
            sharded = self.run_dir / f".{SHARDED}.tmp-{self.step}"
            if self.dist.is_main:
                shutil.rmtree(sharded, ignore_errors=True)
            barrier(self.dist)
            save_sharded(sharded, self.model, self.optimizer, ema_state)  # this process's shards
            ema_state = self.steps.parallel.full_tensors(ema_state) if ema_state is not None else None
            barrier(self.dist)
        if self.dist.is_main:
            optimizer_state = ({"scheduler": self.scheduler.state_dict()} if sharded else self.steps.state_dict())
            optimizer_state["torch_rng"] = torch.get_rng_state()
            state = {"method": self.method.name, "step": self.step, "epoch": self.loader.epoch,
                     "data": self.loader.state_dict(), "best_val": self.best_val,
                     "evals_since_best": self.evals_since_best,
                     "label_names": self.dataset.label_names, "layout": self.cfg.data.layout,
                     "total_steps": self.total_steps, "world_size": self.dist.world_size,
                     "parallel": "fsdp" if sharded else "ddp"}
            save_checkpoint(self.run_dir, cfg=self.cfg, model=self.model, tokenizer=self.dataset.tokenizer,
                            trainer_state=state, optimizer_state=optimizer_state, ema_state=ema_state,
                            weights=weights, sharded=sharded)
        self.last_saved_step = self.step
        barrier(self.dist)

    def close(self) -> None:
        self.lock.release()
        shutdown(self.dist)

    # ------------------------------------------------------------------ the run folder
    def _check_run_folder(self) -> None:
        """Fail fast, before any data work: the folder must be writable, free, and (unless
        resuming or overwriting) hold no run."""
        check_writable(self.run_dir, "train.out_dir")  # creates nothing: train() makes the folder
        ensure_free(self.run_dir)
        held = describe_run(self.run_dir)
        if held and not (self.resuming or self.overwrite):
            raise self._run_exists(held)

    def _run_exists(self, held: str) -> ConfigError:
        run = self.run_dir
        said = f"run folder '{run}' already holds {held}; continue it with"
        return ConfigError(f"{said} Trainer.resume('{run}'), replace it with overwrite=True, or choose a new "
                           "train.out_dir",
                           cli=f"{said} --resume {run}, replace it with --overwrite, or choose a new --out_dir")

    def _take_run_folder(self) -> list[str]:
        """Lock the run folder for this training and make it ready; returns notes to print."""
        make_run_folder(self.run_dir)
        self.lock.acquire()
        notes = []
        held = describe_run(self.run_dir)
        if held and not self.resuming:
            if not self.overwrite:
                self.lock.release()
                raise self._run_exists(held)
            clear_run(self.run_dir)
            notes.append(f"replaced {held} in {self.run_dir} (--overwrite)")
        leftovers = tidy(self.run_dir)
        if leftovers:
            notes.append(f"removed what an interrupted save left in {self.run_dir}: {', '.join(leftovers)}")
        if self.resuming:
            torn = truncate_metrics(self.run_dir, self.step)
            if torn:
                notes.append(f"repaired {self.run_dir / 'metrics.jsonl'}: dropped {torn} unreadable line(s) "
                             "(a write cut short by a crash)")
        save_config(self.cfg, self.run_dir / "config.yaml")
        return notes


def optimizer_settings(t: TrainConfig) -> OptimizerSettings:
    """The optimiser step's settings of a run's `train` section."""
    return OptimizerSettings(learning_rate=t.learning_rate, weight_decay=t.weight_decay, betas=(t.beta1, t.beta2),
                             warmup_steps=t.warmup_steps, min_lr_ratio=t.min_lr_ratio, grad_clip=t.grad_clip,
                             grad_accum=t.grad_accum, ema_decay=t.ema_decay)


def _check_steps_left(run_dir, step: int, total: int, max_steps: int | None) -> None:
    """ArgumentError when a resumed run would not train a single step."""
    if step < total:
        return
    run = literal(run_dir)
    if max_steps is not None:
        raise ArgumentError(f"run '{run}' is already at step {step}, so {{max_steps}} of {max_steps} would not train "
                            f"it further; pass {{max_steps}} above {step}", max_steps="max_steps")
    raise ArgumentError(f"run '{run}' has finished (step {step} of {total}); to train it longer, resume it with "
                        f"{{max_steps}} above {step}", max_steps="max_steps")


def _check_parallel(ckpt: Path, state: dict, sharded: bool) -> None:
    """CheckpointError unless the checkpoint holds the state this run resumes from: shards for a
    sharded run, whole optimizer state for the others."""
    saved = state.get("parallel", "ddp")
    processes = state.get("world_size", 1)
    if sharded and not (ckpt / SHARDED).is_dir():
        raise CheckpointError(f"checkpoint '{ckpt}' holds no sharded state (it was written by a {saved} run on "
                              f"{processes} process(es)); resume it with train.parallel={saved}")
    if not sharded and saved == "fsdp":
        raise CheckpointError(f"checkpoint '{ckpt}' holds sharded state of an FSDP run on {processes} processes; "
                              f"resume it under torchrun with --nproc_per_node {processes}")
