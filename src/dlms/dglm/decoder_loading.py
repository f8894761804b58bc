"""Loading the AR decoder that DGLM's proposals steer: a dlms 'ar' run, or a Hugging Face
causal LM (GPT-2 family) by folder or Hub id."""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..backbones.huggingface import load_hf_config, load_pretrained_causal_lm, quiet_loading
from ..errors import ConfigError, DlmsError
from ..hub import Pretrained, causal_lm_copy, load_pretrained
from ..checkpoint import find_checkpoint

# How a Hugging Face decoder is named in error lines and how a user gets a local copy of one.
DECODER = Pretrained("decoder", causal_lm_copy())


def is_dlms_run(name: str) -> bool:
    """True for a folder written by `dlms train` (a run or its checkpoint)."""
    path = Path(name).expanduser()
    return path.is_dir() and any((p / "trainer_state.json").is_file() for p in (path, path / "checkpoint"))


@dataclass
class LoadedDecoder:
    """The decoder network with what the pipeline reads of it."""

    name: str
    kind: str  # "dlms-ar" or "huggingface"
    model: torch.nn.Module
    tokenizer: object
    hidden_size: int

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def load_decoder(name: str, device: torch.device | str = "cpu", positions: int | None = None) -> LoadedDecoder:
    """A dlms 'ar' run (CheckpointError if it is another method) or a Hugging Face causal LM
    (ConfigError, one line, if it cannot be found or loaded). `positions`: the longest input it
    will be given (prefix, soft tokens, continuation); a dlms model trained on shorter texts
    gets room for it (rotary positions need no new weights)."""
    device = torch.device(device)
    if is_dlms_run(name):
        from ..model import DiffusionLM

        lm = DiffusionLM.load_checkpoint(find_checkpoint(name), device=str(device), expect_method="ar")
        if lm.prompted:  # it writes responses after a separator, not continuations of a prefix
            from .config import PROMPT_RESPONSE_REFUSAL

            raise ConfigError(f"'{name}' is an ar run trained on prompt/response data, which DGLM's decoder cannot "
                              f"be: {PROMPT_RESPONSE_REFUSAL}; use an ar run trained on plain text")
        if positions:
            lm.model.extend_positions(positions)
        return LoadedDecoder(name, "dlms-ar", lm.model, lm.tokenizer, int(lm.model.spec.d_model))
    from transformers import AutoTokenizer

    config = load_hf_config(name)
    limit = getattr(config, "max_position_embeddings", None)
    if positions and isinstance(limit, int) and positions > limit:
        raise ConfigError(f"decoder '{name}' reads at most {limit} positions, but prefix + soft tokens + continuation "
                          f"need {positions}; lower decoder.max_prefix_tokens, decoder.max_continuation_tokens or "
                          "generation.max_tokens (--max_tokens)")
    with quiet_loading():
        model = load_pretrained_causal_lm(name, config).to(device).eval()
    tokenizer = load_pretrained(name, lambda source, local: AutoTokenizer.from_pretrained(source, local_files_only=local),
                                DECODER, "decoder folder '{name}' holds no tokenizer that loads ({reason}); pass a "
                                "folder written by model.save_pretrained() and tokenizer.save_pretrained()")
    return LoadedDecoder(name, "huggingface", model, tokenizer, int(config.hidden_size))


def load_decoder_for(role: str, name: str, device: torch.device | str = "cpu",
                     positions: int | None = None) -> LoadedDecoder:
    """`load_decoder`, its one-line errors prefixed by the decoder's role (a config key or a
    flag), so the user knows which name to fix."""
    try:
        return load_decoder(name, device, positions)
    except DlmsError as exc:
        raise type(exc)(f"{role}: {exc}") from None


def save_decoder_copy(dest: Path, source: str, model: torch.nn.Module, tokenizer) -> None:
    """Write `model`, a fine-tuned copy of the decoder loaded from `source`, as a folder that
    `load_decoder` reads on its own: a dlms checkpoint (the source's config, trainer state,
    tokenizer and architecture files beside the new weights) or a Hugging Face model folder."""
    dest.mkdir(parents=True)
    if is_dlms_run(source):
        ckpt = find_checkpoint(source)
        for item in ("config.yaml", "trainer_state.json", "tokenizer", "backbone"):
            if (ckpt / item).is_dir():
                shutil.copytree(ckpt / item, dest / item)
            elif (ckpt / item).is_file():
                shutil.copy2(ckpt / item, dest / item)
        save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()},
                  str(dest / "model.safetensors"))
    else:
        model.save_pretrained(str(dest))
        tokenizer.save_pretrained(str(dest))
