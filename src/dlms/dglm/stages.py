"""A trained DGLM stage on disk is a folder with `config.json` naming its stage beside its
weights; these read and write that file."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import CheckpointError

META_FILE = "config.json"


def write_stage_meta(folder: Path, stage: str, **fields: Any) -> None:
    (folder / META_FILE).write_text(json.dumps({"stage": stage, **fields}, indent=2), encoding="utf-8")


def read_stage_meta(folder: str | Path, stage: str, title: str) -> dict[str, Any]:
    """The config.json of a `stage` folder ("latent_diffusion", "decoder"); a missing, damaged
    or other-stage folder is a CheckpointError. `title`: the stage in words, for the message."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise CheckpointError(f"'{folder}' holds no {title} stage ({META_FILE} missing or damaged); "
                              f"train the {title} stage first") from None
    if not isinstance(meta, dict) or meta.get("stage") != stage:
        found = meta.get("stage") if isinstance(meta, dict) else None
        raise CheckpointError(f"'{folder}' is a '{found}' stage, not the {title} stage; "
                              f"pass the folder the {title} stage wrote")
    return meta


PROGRESS_FILE = "progress.json"  # {"step": done steps, "steps": planned steps, ...}
OPTIMIZER_FILE = "optimizer.pt"  # optimizer and LR-schedule state (tensors and plain containers)


def write_training_state(folder: Path, progress: dict[str, Any] | None, optimizer_state: dict[str, Any] | None) -> None:
    """Beside a stage's weights: how far its training got, and the optimizer to resume it."""
    import torch

    if progress is not None:
        (folder / PROGRESS_FILE).write_text(json.dumps(progress, indent=2), encoding="utf-8")
    if optimizer_state is not None:
        torch.save(optimizer_state, folder / OPTIMIZER_FILE)


def read_training_state(folder: str | Path) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(progress, optimizer state) of a stage folder; ({}, None) when it holds none (a stage
    folder without progress.json, e.g. one not yet trained). A damaged progress.json or
    optimizer state is a CheckpointError. Read with `torch.load(weights_only=True)`: no pickled
    code runs."""
    import torch

    folder = Path(folder)
    if not (folder / PROGRESS_FILE).is_file():
        return {}, None
    try:
        progress = json.loads((folder / PROGRESS_FILE).read_text(encoding="utf-8"))
        step = int(progress["step"]) if isinstance(progress, dict) else -1
    except (OSError, ValueError, KeyError, TypeError):
        step = -1
    if step < 0:
        raise CheckpointError(f"'{folder / PROGRESS_FILE}' is damaged; delete '{folder}' to train that stage again")
    try:
        optimizer_state = torch.load(folder / OPTIMIZER_FILE, weights_only=True, map_location="cpu")
    except Exception:  # noqa: BLE001  (a missing or damaged file means: restart the stage's schedule)
        raise CheckpointError(f"'{folder / OPTIMIZER_FILE}' is missing or damaged; delete '{folder}' to train "
                              "that stage again") from None
    return progress, optimizer_state
