"""Self-describing checkpoints, written atomically, read without unpickling.

A run directory holds `config.yaml`, `metrics.jsonl` and `checkpoint/`, which holds the
resolved `config.yaml`, `model.safetensors` (and `ema.safetensors`), `tokenizer/`,
`optimizer.pt` (optimizer and LR-scheduler state, tensors and plain containers only; read with
`torch.load(weights_only=True)`) and `trainer_state.json` (step, data position, labels, ...).
A checkpoint is written to a temporary folder and renamed into place, so a crash never leaves
a half-written one.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import RunConfig, config_from_dict, read_yaml, save_config
from .errors import CheckpointError, DlmsError
from .jsonsafe import dumps

CHECKPOINT = "checkpoint"
FORMAT_VERSION = 1


def find_checkpoint(path: str | Path) -> Path:
    """The checkpoint folder for a run folder or a checkpoint folder; CheckpointError if none."""
    p = Path(path)
    if not p.exists():
        nearby = sorted(str(d) for d in p.parent.glob("*") if (d / CHECKPOINT / "trainer_state.json").is_file()) \
            if p.parent.is_dir() else []
        hint = f" (runs there: {', '.join(nearby[:5])})" if nearby else ""
        raise CheckpointError(f"checkpoint '{path}' does not exist; pass a run folder written by `dlms train`{hint}")
    for candidate in (p, p / CHECKPOINT, p / f".{CHECKPOINT}.old"):
        if (candidate / "trainer_state.json").is_file():
            return candidate
    raise CheckpointError(f"'{path}' holds no checkpoint (no trainer_state.json); pass a run folder written by `dlms train`")


def _write_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path))


def save_checkpoint(run_dir: str | Path, *, cfg: RunConfig, model: torch.nn.Module, tokenizer,
                    trainer_state: dict[str, Any], optimizer_state: dict[str, Any] | None = None,
                    ema_state: dict[str, torch.Tensor] | None = None, name: str = CHECKPOINT,
                    weights: dict[str, torch.Tensor] | None = None, sharded: Path | None = None) -> Path:
    """Write `run_dir/<name>` (default `checkpoint`) atomically and return its path.

    `weights`: the model's whole state dict when `model.state_dict()` holds only a shard (an FSDP
    run consolidates it first); `sharded`: a folder of per-process shards (training/
    sharded_checkpoint.py) moved into the checkpoint as `sharded/` before it is put in place."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / f".{name}.tmp-{os.getpid()}"
    final, old = run_dir / name, run_dir / f".{name}.old"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_config(cfg, tmp / "config.yaml")
    _write_tensors(model.state_dict() if weights is None else weights, tmp / "model.safetensors")
    save_architecture = getattr(model, "save_architecture", None)
    if save_architecture is not None:  # a pretrained backbone's config.json: rebuilt offline from here
        save_architecture(tmp)
    if ema_state is not None:
        _write_tensors(ema_state, tmp / "ema.safetensors")
    tokenizer.save_pretrained(str(tmp / "tokenizer"))
    if optimizer_state is not None:
        torch.save(optimizer_state, tmp / "optimizer.pt")
    if sharded is not None:
        sharded.rename(tmp / "sharded")
    state = {"format_version": FORMAT_VERSION, **trainer_state}
    (tmp / "trainer_state.json").write_text(dumps(state, indent=2), encoding="utf-8")  # inf best_val -> null
    # Swap: the previous checkpoint survives until the new one is complete.
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def read_trainer_state(ckpt: Path) -> dict[str, Any]:
    try:
        state = json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint '{ckpt}' is damaged (trainer_state.json unreadable: {exc}); "
                              "use another checkpoint or retrain") from None
    if not isinstance(state, dict) or "method" not in state:
        raise CheckpointError(f"checkpoint '{ckpt}' is damaged (trainer_state.json has no method); retrain")
    return state


def read_config(ckpt: Path) -> RunConfig:
    """The run config saved in `ckpt`; runs saved before each method had its own options carry
    every method's options, and those of other methods at their defaults are dropped."""
    try:
        return config_from_dict(read_yaml(ckpt / "config.yaml"), saved=True)
    except DlmsError as exc:
        raise CheckpointError(f"checkpoint '{ckpt}' has a bad config.yaml ({exc})") from None


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Weights from a safetensors file; a damaged file is a CheckpointError."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint file '{path}' is missing; the checkpoint is incomplete, use another one")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"checkpoint file '{path}' is damaged ({str(exc).splitlines()[0]}); "
                              "use another checkpoint or retrain") from None


def load_weights(model: torch.nn.Module, tensors: dict[str, torch.Tensor], source: Path) -> None:
    """Copy `tensors` into `model`, refusing any missing, unexpected or mis-shaped tensor."""
    own = model.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    bad_shape = [k for k in own if k in tensors and tensors[k].shape != own[k].shape]
    if missing or unexpected or bad_shape:
        detail = (f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}" if unexpected
                  else f"shape of {bad_shape[:3]}")
        raise CheckpointError(f"weights in '{source}' do not fit the model in its config.yaml ({detail}); "
                              "the checkpoint is damaged or from another version")
    broken = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if broken:  # such a model samples blank texts and scores NaN: refuse it instead
        raise CheckpointError(f"weights in '{source}' hold NaN or infinite values ({broken[0]}"
                              f"{f' and {len(broken) - 1} more' if len(broken) > 1 else ''}); the run diverged or the "
                              "file is damaged: use another checkpoint or retrain")
    model.load_state_dict(tensors)


def read_optimizer_state(ckpt: Path) -> dict[str, Any]:
    path = ckpt / "optimizer.pt"
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # any failure to read means the file cannot be trusted
        raise CheckpointError(f"optimizer state '{path}' is damaged ({type(exc).__name__}); "
                              "resume from another checkpoint or start a new run") from None


def truncate_metrics(run_dir: Path, step: int) -> int:
    """Drop metric lines after `step` (written by a run that was interrupted after its last save)
    and lines that do not parse (a line torn by a kill mid-write); returns how many unreadable
    lines were dropped. The file is rewritten atomically."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return 0
    kept, torn = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            record_step = int(record.get("step", 0))
        except (ValueError, TypeError, AttributeError):
            torn += 1
            continue
        if record_step <= step:
            kept.append(line)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    tmp.replace(path)
    return torn
