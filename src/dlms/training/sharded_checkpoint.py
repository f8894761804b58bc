"""The sharded half of an FSDP run's checkpoint, written and read with torch.distributed.checkpoint.

A sharded run's checkpoint holds what every checkpoint holds (`model.safetensors` consolidated
from the shards, so one process loads it with `DiffusionLM.load_checkpoint` or `dlms generate`;
config, tokenizer, trainer state) and `sharded/`: each process's shard of the weights, of the
AdamW moments and of the EMA copy, which a resumed run reads back into the same shards. Every
function here is collective: all processes call it together.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

SHARDED = "sharded"  # the folder in a checkpoint


def save_sharded(folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                 ema: dict[str, torch.Tensor] | None) -> None:
    """Write this process's shards of the weights, optimizer state and EMA into `folder`."""
    model_state, optimizer_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optimizer": optimizer_state, "ema": ema or {}}, checkpoint_id=str(folder))


def load_sharded(folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                 ema: dict[str, torch.Tensor] | None) -> None:
    """Read the shards `save_sharded` wrote into the model, the optimizer and (in place) the EMA copy."""
    model_state, optimizer_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optimizer_state, "ema": ema or {}}
    dcp.load(state, checkpoint_id=str(folder))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
