"""`distill`: rounds of few-step distillation, each an ordinary, resumable training run.

    OUT/distill.json      the plan: teacher run, its steps, the student's steps, rounds, per-round settings
    OUT/round-1/          round 1's student: a run folder like any `dlms train` writes
    OUT/round-2/          ... (its teacher: round 1's student)
    OUT/checkpoint/       the final student (a copy of the last round's checkpoint), with
    OUT/config.yaml       OUT/metrics.jsonl: OUT is an ordinary run folder for generate/eval/view

Round i trains the student with steps teacher_steps / k**i (k = 2: halving) from round i-1's
weights (EMA weights when the run keeps them; round 1 from the run itself) through the one
Trainer, with the method's loss replaced by the distillation objective (sdtt.py for masked
runs, progressive.py for gaussian runs). A killed distillation continues with `resume=True`
(`--resume`): finished rounds are skipped, the round in progress resumes from its last
checkpoint exactly as `dlms train --resume` does, later rounds start when it ends.
"""
from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from ..assembly import dataset_from_config
from ..checks import check_int, check_number
from ..config import DistillConfig, RunConfig
from ..errors import ArgumentError, CheckpointError, ConfigError, literal
from ..jsonsafe import dumps
from ..paths import check_writable
from ..training import Trainer
from ..checkpoint import find_checkpoint, read_config, read_trainer_state
from ..devices import resolve_device
from ..run_folder import RunLock, clear_run, describe_run, tidy
from .progressive import ProgressiveObjective
from .sdtt import SDTTObjective

PLAN = "distill.json"
OBJECTIVES = {"masked": "sdtt", "gaussian": "progressive"}
_OUT = "out_dir"


def round_dir(out_dir: str | Path, i: int) -> Path:
    return Path(out_dir) / f"round-{i}"


# ---------------------------------------------------------------------- the plan


def plan_rounds(teacher_steps: int, steps: int, rounds: int | None = None) -> tuple[int, int]:
    """(rounds, k): each round divides the sampling steps by k. Without `rounds`, k = 2 (halving)
    and `steps` must be teacher_steps / 2**r; with `rounds` R, teacher_steps / steps must be an
    integer k**R with k >= 2. ArgumentError otherwise, naming the step counts that would work."""
    check_int("steps", steps, 1, optional=False)
    check_int("teacher_steps", teacher_steps, 2, optional=False)
    check_int("rounds", rounds, 1)
    if steps >= teacher_steps:
        raise ArgumentError(f"{{steps}} ({steps}) must be smaller than the teacher's {teacher_steps} sampling steps "
                            "(the run's sample.num_steps, or {teacher_steps})", steps="steps",
                            teacher_steps="teacher_steps")
    halvings = []
    n = teacher_steps
    while n % 2 == 0 and n > 1:
        n //= 2
        halvings.append(n)
    reachable = ", ".join(str(x) for x in halvings) or "none"
    ratio = teacher_steps // steps
    if teacher_steps % steps:
        raise ArgumentError(f"{{steps}} ({steps}) does not divide the teacher's {teacher_steps} sampling steps; "
                            f"halving {teacher_steps} reaches {reachable}", steps="steps")
    if rounds is None:
        r = round(math.log2(ratio))
        if 2**r != ratio:
            raise ArgumentError(
                f"{{steps}} ({steps}) is not reached from the teacher's {teacher_steps} sampling steps by halving "
                f"(halving reaches {reachable}); pick one of those, or pass {{rounds}} 1 to distil "
                f"{teacher_steps} -> {steps} in one round ({ratio} teacher steps per student step)",
                steps="steps", rounds="rounds")
        return r, 2
    k = round(ratio ** (1.0 / rounds))
    if k < 2 or k**rounds != ratio:
        raise ArgumentError(
            f"{rounds} {{rounds}} cannot take {teacher_steps} sampling steps to {steps}: each round divides the steps "
            f"by the same whole factor, and {ratio} is not a whole number's {rounds}-th power (at least 2)",
            rounds="rounds")
    return rounds, k


# ---------------------------------------------------------------------- the teacher


def load_frozen(path: str | Path, device: torch.device):
    """(config, method, model, tokenizer) of a run, the model in eval mode with gradients off,
    on `device`, with its EMA weights when it keeps them (the weights it samples with)."""
    from ..model import DiffusionLM

    lm = DiffusionLM.load_checkpoint(path, device=str(device), use_ema=True)
    return lm.cfg, lm.method, lm.model.eval().requires_grad_(False), lm.tokenizer


def _check_teacher(checkpoint: str | Path) -> tuple[Path, RunConfig, dict]:
    """The teacher run's checkpoint folder, config and state; one clear error for what cannot be distilled."""
    from ..run_folder import DGLM_RUN_CONFIG as DGLM_CONFIG

    path = Path(checkpoint)
    if (path / DGLM_CONFIG).is_file():
        raise ConfigError(f"'{checkpoint}' is a DGLM run, which cannot be distilled; `dlms distill` takes a masked "
                          "or gaussian run written by `dlms train`")
    ckpt = find_checkpoint(path)
    state = read_trainer_state(ckpt)
    cfg = read_config(ckpt)
    if cfg.method.name not in OBJECTIVES:
        why = "an autoregressive model already samples one token per step" if cfg.method.name == "ar" else \
            "its sampler has no few-step objective here yet"
        raise ConfigError(f"'{checkpoint}' is a '{cfg.method.name}' run, which cannot be distilled ({why}); "
                          f"`dlms distill` takes a {' or '.join(OBJECTIVES)} run")
    if cfg.data.format == "prompt_response":  # the objectives would noise and match the prompts too
        raise ConfigError(f"'{checkpoint}' was trained on prompt/response data, which `dlms distill` does not take "
                          "yet (its objectives know no prompt to hold clean); distill a run trained on plain text")
    return ckpt, cfg, state


# ---------------------------------------------------------------------- the output folder


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(dumps(data, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def _held(out: Path) -> str | None:
    """What `out` holds of a distillation or a run, or None."""
    if (out / PLAN).is_file() or any(out.glob("round-*")):
        return "a distillation"
    return describe_run(out)


def _clear(out: Path) -> None:
    """Remove a distillation's files from `out` (only those), for `overwrite`."""
    for folder in sorted(out.glob("round-*")):
        if folder.is_dir() and folder.name[len("round-"):].isdigit():
            clear_run(folder)
            (folder / ".lock").unlink(missing_ok=True)
            try:
                folder.rmdir()
            except OSError:
                pass  # files the user put there stay
    clear_run(out)
    (out / PLAN).unlink(missing_ok=True)


def _publish(src: Path, out: Path) -> None:
    """Copy the finished run `src` into `out` as its run files (checkpoint swapped in atomically)."""
    tmp, final, old = out / f".checkpoint.tmp-{os.getpid()}", out / "checkpoint", out / ".checkpoint.old"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src / "checkpoint", tmp, ignore=shutil.ignore_patterns("optimizer.pt"))  # not resumed from here
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    for name in ("config.yaml", "metrics.jsonl"):
        if (src / name).is_file():
            part = out / f".{name}.tmp-{os.getpid()}"
            shutil.copy2(src / name, part)
            part.replace(out / name)


def _round_state(folder: Path) -> dict | None:
    """The trainer state of a round's last checkpoint, or None when it has none."""
    try:
        return read_trainer_state(find_checkpoint(folder))
    except CheckpointError:
        return None


# ---------------------------------------------------------------------- distill


def distill(checkpoint: str | Path, steps: int | None = None, *, out_dir: str | Path | None = None,
            rounds: int | None = None, teacher_steps: int | None = None, max_steps: int | None = None,
            learning_rate: float | None = None, batch_size: int | None = None, device: str | None = None,
            progress: bool | None = None, resume: bool = False, overwrite: bool = False,
            still_masked: str = "last") -> dict[str, Any]:
    """Distil the masked or gaussian run in `checkpoint` into a student that samples in `steps`
    steps; returns a summary. The student is an ordinary run in `out_dir` (default
    `<checkpoint>-distilled-<steps>`), with `sample.num_steps` = `steps` and its provenance in
    its config's `distill` section. `teacher_steps`: the teacher's steps (default: the run's
    sample.num_steps); `rounds`: how many rounds (default: halve the steps each round);
    `max_steps`, `learning_rate`, `batch_size`: per round (default: the run's own); `resume`:
    continue the distillation in `out_dir`; `overwrite`: replace what `out_dir` holds."""
    if resume and overwrite:
        raise ArgumentError("{resume} continues a distillation and {overwrite} replaces it: pass one",
                            resume="resume", overwrite="overwrite")
    check_int("max_steps", max_steps, 1)
    check_int("batch_size", batch_size, 1)
    check_number("learning_rate", learning_rate, 0, low_open=True)
    if still_masked not in ("last", "exclude"):
        raise ArgumentError("{still_masked} must be 'last' or 'exclude', got " + literal(repr(still_masked)),
                            still_masked="still_masked")
    ckpt, cfg, state = _check_teacher(checkpoint)
    teacher_path = str(Path(checkpoint).resolve())
    if steps is None and (not resume or out_dir is None):
        raise ArgumentError("{steps} is required: the student's sampling steps", steps="steps")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("distillation runs in one process for now; start it without torchrun")
    out = Path(out_dir) if out_dir is not None else Path(f"{str(checkpoint).rstrip('/')}-distilled-{steps}")
    check_writable(out, _OUT)
    resolved_out = out.resolve()
    if resolved_out == Path(teacher_path) or resolved_out in Path(teacher_path).parents:
        raise ArgumentError("{out_dir} '" + literal(out) + "' holds the teacher run; choose another folder",
                            out_dir=_OUT)
    plan_file = out / PLAN
    saved = None
    if resume:
        if not plan_file.is_file():
            raise ArgumentError("{out_dir} '" + literal(out) + "' holds no distillation to resume; run without "
                                "{resume}", out_dir=_OUT, resume="resume")
        try:
            saved = json.loads(plan_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise CheckpointError(f"'{plan_file}' is damaged; start again with overwrite") from None
        given = {"checkpoint": ("teacher", teacher_path), "steps": ("steps", steps),
                 "teacher_steps": ("teacher_steps", teacher_steps), "rounds": ("rounds", rounds),
                 "max_steps": ("max_steps", max_steps), "learning_rate": ("learning_rate", learning_rate),
                 "batch_size": ("batch_size", batch_size)}
        for arg, (key, value) in given.items():
            if value is not None and value != saved.get(key):
                raise ArgumentError(f"{{{arg}}} {literal(value)} differs from the distillation in '{literal(out)}' "
                                    f"({key} {literal(saved.get(key))}); resume it as it was started, or start "
                                    f"again with {{overwrite}}", **{arg: arg}, overwrite="overwrite")
        steps, teacher_steps, rounds = saved["steps"], saved["teacher_steps"], saved["rounds"]
    teacher_steps = cfg.sample.num_steps if teacher_steps is None else teacher_steps
    n_rounds, k = plan_rounds(teacher_steps, steps, rounds)
    if saved is None:
        held = _held(out) if out.is_dir() else None
        if held and not overwrite:
            raise ArgumentError(f"{{out_dir}} '{literal(out)}' already holds {literal(held)}; continue it with "
                                "{resume}, replace it with {overwrite}, or choose another {out_dir}",
                                out_dir=_OUT, resume="resume", overwrite="overwrite")
        saved = {"teacher": teacher_path, "teacher_steps": teacher_steps, "steps": steps, "rounds": n_rounds,
                 "factor": k, "objective": OBJECTIVES[cfg.method.name],
                 "max_steps": max_steps, "learning_rate": learning_rate, "batch_size": batch_size,
                 "round_steps": [teacher_steps // k**i for i in range(1, n_rounds + 1)]}
    out.mkdir(parents=True, exist_ok=True)
    lock = RunLock(out).acquire()
    try:
        if not resume:
            if _held(out):
                _clear(out)
            _write_json(plan_file, saved)
        tidy(out)
        summary = _run_rounds(cfg, state, saved, out, n_rounds, k, device, progress, still_masked)
        _publish(round_dir(out, n_rounds), out)
    finally:
        lock.release()
    return summary


def _run_rounds(cfg: RunConfig, state: dict, plan: dict, out: Path, n_rounds: int, k: int, device: str | None,
                progress: bool | None, still_masked: str) -> dict[str, Any]:
    t = cfg.train
    max_steps = plan["max_steps"] or state.get("total_steps") or t.max_steps
    dev = resolve_device(device or t.device, int(os.environ.get("LOCAL_RANK", "0")))
    teacher_path = plan["teacher"]
    done = []
    dataset = None
    for i in range(1, n_rounds + 1):
        folder = round_dir(out, i)
        student_steps = plan["teacher_steps"] // k**i
        held = _round_state(folder)
        if held is not None and held.get("step", 0) >= held.get("total_steps", math.inf):
            done.append({"round": i, "steps": student_steps, "run_dir": str(folder), "step": held["step"],
                         "skipped": True})
            teacher_path = str(folder)
            continue
        teacher_cfg, method, teacher, tokenizer = load_frozen(teacher_path, dev)
        if dataset is None:  # x0 from the run's own data, tokenized by its own tokenizer
            dataset = dataset_from_config(cfg.data, tokenizer=tokenizer)
        if method.name == "masked":
            objective = SDTTObjective(method, teacher, student_steps, k, still_masked)
        else:
            objective = ProgressiveObjective(method, teacher, student_steps, k)
        objective.description = f"round {i} of {n_rounds}: {objective.description}"
        if held is not None:
            trainer = Trainer.resume(folder, dataset=dataset, objective=objective)
        else:
            student_cfg = _student_config(teacher_cfg, plan, folder, i, n_rounds, student_steps, max_steps,
                                          device, progress)
            # A folder without a checkpoint is what a round killed before its first save left.
            trainer = Trainer(student_cfg, dataset, overwrite=True, objective=objective,
                              init_weights=teacher.state_dict())
        try:
            result = trainer.train()
        finally:
            trainer.close()
        done.append({"round": i, "steps": student_steps, "run_dir": str(folder), "step": result["step"],
                     "loss": result["loss"]})
        teacher_path = str(folder)
        del teacher, objective, trainer
    return {"out_dir": str(out), "teacher": plan["teacher"], "teacher_steps": plan["teacher_steps"],
            "steps": plan["steps"], "objective": plan["objective"], "rounds": done}


def _student_config(teacher_cfg: RunConfig, plan: dict, folder: Path, i: int, n_rounds: int, student_steps: int,
                    max_steps: int, device: str | None, progress: bool | None) -> RunConfig:
    """The round's run config: the teacher's, with the student's steps, the round's training
    settings and the distillation's provenance."""
    t = teacher_cfg.train
    train = replace(t, out_dir=str(folder), max_steps=max_steps, num_epochs=None, early_stop_patience=0,
                    learning_rate=plan["learning_rate"] or t.learning_rate,
                    batch_size=plan["batch_size"] or t.batch_size, device=device or t.device,
                    progress=t.progress if progress is None else progress)
    method = teacher_cfg.method
    if method.name == "gaussian":  # the diffusion space is the token table: the student keeps the teacher's
        method = replace(method, freeze_embeddings=True)
    provenance = DistillConfig(teacher=plan["teacher"], teacher_steps=plan["teacher_steps"],
                               objective=plan["objective"], round=i, rounds=n_rounds)
    # The student samples the way it was taught: whole-canvas ancestral steps (masked) or
    # deterministic DDIM steps (gaussian), whatever sampler the teacher's run defaulted to.
    if method.name == "gaussian":
        sample = replace(teacher_cfg.sample, num_steps=student_steps, sampler="ddim", eta=0.0)
    else:
        sample = replace(teacher_cfg.sample, num_steps=student_steps, sampler="ancestral", block_size=None,
                         cache="none")
    return replace(teacher_cfg, train=train, method=method, sample=sample, distill=provenance)
