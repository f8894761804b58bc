"""`train.init_from` (`dlms train --init_from RUN`): a new run that starts from another run's weights.

The rules:

- RUN is a folder written by `dlms train` (a run or its checkpoint). Its weights are read from
  safetensors, never unpickled: the EMA weights when it kept them (the weights it samples with),
  else its model weights.
- The tokenizer is RUN's: the new data is tokenized with it (`data.tokenizer` must stay null).
  Prompt/response data adds a separator token when RUN's tokenizer has none; the vocabulary rows
  of such added tokens (input embedding, output head, a gaussian token table) start at the mean of
  RUN's rows, every other row is RUN's.
- The backbone's architecture is RUN's: each key of `ARCHITECTURE` left at its default takes RUN's
  value, and one set to anything else is a ConfigError (the weights would not fit). The method
  may differ wherever the weights fit: an `ar` run into `masked` or `block` (AR-to-diffusion
  conversion: the same network, its attention made bidirectional; a Hugging Face backbone is made
  bidirectional by its config flag), masked into block and back. What else a method adds to the
  backbone (the gaussian method's input layers and token table, class conditioning for labels)
  must be in RUN too: a missing, unexpected or mis-shaped tensor is one CheckpointError naming it.
- It is not a resume: the new run starts at step 0 with a fresh optimizer, schedule and data
  order (`--resume` continues a run, unchanged). The new run's config keeps `train.init_from`.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch

from ..config import ModelConfig, RunConfig
from ..errors import CheckpointError, ConfigError, DlmsError
from ..checkpoint import find_checkpoint, load_weights, read_config, read_tensors, read_trainer_state

# The model keys that decide which tensors the backbone has and their shapes.
ARCHITECTURE = ("backbone", "preset", "d_model", "n_layers", "n_heads", "mlp_hidden", "qk_norm", "skip_connections",
                "time_conditioning", "time_conditioning_style")
_DEFAULTS = {f.name: f.default for f in fields(ModelConfig)}


@dataclass
class InitSource:
    """The run a new one starts from: its checkpoint, resolved config, tokenizer and weights file."""

    run: str
    ckpt: Path
    cfg: RunConfig
    method: str
    step: int
    tokenizer: Any
    vocab_size: int  # len(tokenizer) as RUN trained it (before tokens the new data may add)
    weights: Path


def read_init_source(run: str, out_dir: str | Path) -> InitSource:
    """The run `train.init_from` names; CheckpointError when it holds no checkpoint, ConfigError
    when it is the new run's own folder (that is `--resume`)."""
    from ..data import load_tokenizer

    ckpt = find_checkpoint(run)
    if Path(out_dir).expanduser().resolve() in (ckpt.resolve(), ckpt.parent.resolve()):
        raise ConfigError(f"train.init_from '{run}' is this run's own folder (train.out_dir); continue a run with "
                          "Trainer.resume, or train into a new folder",
                          cli=f"--init_from '{run}' is this run's own folder (--out_dir); continue it with "
                              "--resume, or train into a new folder")
    state = read_trainer_state(ckpt)
    try:
        tokenizer = load_tokenizer(str(ckpt / "tokenizer"))
    except DlmsError:
        raise CheckpointError(f"train.init_from '{run}': its tokenizer folder cannot be read; start from another "
                              "run") from None
    ema = ckpt / "ema.safetensors"
    return InitSource(run=str(run), ckpt=ckpt, cfg=read_config(ckpt), method=str(state["method"]),
                      step=int(state.get("step", 0)), tokenizer=tokenizer, vocab_size=len(tokenizer),
                      weights=ema if ema.is_file() else ckpt / "model.safetensors")


def inherit_architecture(cfg: RunConfig, source: InitSource) -> RunConfig:
    """`cfg` with RUN's backbone architecture (the `ARCHITECTURE` keys): a key left at its default
    takes RUN's value; one set to another value than RUN's is a ConfigError."""
    model = cfg.model
    theirs = source.cfg.model
    values = {}
    for key in ARCHITECTURE:
        mine, given = getattr(model, key), getattr(theirs, key)
        if mine != _DEFAULTS[key] and mine != given:
            raise ConfigError(f"model.{key}={mine!r}, but the run train.init_from starts from ('{source.run}') has "
                              f"{given!r}: its weights fit only its own backbone; drop model.{key}",
                              cli=f"model.{key}={mine!r}, but the run --init_from starts from ('{source.run}') has "
                                  f"{given!r}: its weights fit only its own backbone; drop model.{key}")
        values[key] = given
    return replace(cfg, model=replace(model, **values))


def grow_vocabulary(tensors: dict[str, torch.Tensor], own: dict[str, torch.Tensor], old_vocab: int,
                    new_vocab: int) -> tuple[dict[str, torch.Tensor], list[str]]:
    """`tensors` with every vocabulary table [old_vocab, ...] that the model has as [new_vocab, ...]
    grown by the rows of the added tokens (each the mean of the old rows); returns the names grown."""
    if new_vocab <= old_vocab:
        return tensors, []
    out, grown = dict(tensors), []
    for name, value in tensors.items():
        mine = own.get(name)
        if (mine is not None and value.dim() >= 1 and value.shape[0] == old_vocab and mine.shape[0] == new_vocab
                and value.shape[1:] == mine.shape[1:]):
            extra = value.float().mean(0, keepdim=True).to(value.dtype).expand(new_vocab - old_vocab, *value.shape[1:])
            out[name] = torch.cat([value, extra])
            grown.append(name)
    return out, grown


def init_weights(model: torch.nn.Module, source: InitSource, method: str) -> str:
    """Load RUN's weights into `model` (built for the new run); returns the line the run logs.
    CheckpointError, one line, when they do not fit."""
    tensors = read_tensors(source.weights)
    own = model.state_dict()
    tensors, grown = grow_vocabulary(tensors, own, source.vocab_size, int(model.spec.vocab_size))
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    bad = [k for k in own if k in tensors and tensors[k].shape != own[k].shape]
    if missing or unexpected or bad:
        if bad:
            detail = f"{bad[0]} is {tuple(tensors[bad[0]].shape)} there, {tuple(own[bad[0]].shape)} here"
        elif missing:
            detail = f"this run's backbone has {missing[0]}{_more(missing)}, which it lacks"
        else:
            detail = f"it has {unexpected[0]}{_more(unexpected)}, which this run's backbone lacks"
        said = (f"the weights of '{source.run}' ({source.method}) do not fit this run's backbone ({method}): {detail}; "
                "starting from a run needs the same backbone shape: the same model sizes, time conditioning and "
                "label classes (the gaussian method's input layers fit only a gaussian run)")
        raise CheckpointError(f"train.init_from: {said}", cli=f"--init_from: {said}")
    load_weights(model, tensors, source.weights)  # also refuses NaN or infinite weights
    note = f"started from the weights of {source.run} ({source.method}, step {source.step}, {source.weights.name})"
    if grown:
        note += (f"; the {int(model.spec.vocab_size) - source.vocab_size} token(s) the data added to its tokenizer "
                 f"start at the mean row of {', '.join(grown)}")
    return note


def _more(names: list[str]) -> str:
    return f" and {len(names) - 1} more" if len(names) > 1 else ""
