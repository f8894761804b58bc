"""DGLM's decoder conditioning: a soft prompt made from a (noised) sentence embedding.

`SoftPrompt` maps an embedding [B, D] and its noise level t [B] to P soft tokens [B, P, H] in
the decoder's input-embedding space. They sit between the prefix and the continuation:

    [prefix tokens] [P soft tokens] [continuation tokens]

The decoder is trained with the true continuation's embedding noised to a random level
(z = alpha(t) x + sigma(t) eps, in standardised units) and told that level, so it learns to
trust a proposal only as far as it is reliable; at generation a proposal is re-noised to a
chosen level. `SoftPromptedDecoder` wraps a dlms AR backbone or a Hugging Face causal LM behind
one interface: token embeddings in, logits out.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_model, save_model
from torch import nn

from ..backbones.conditioning import timestep_embedding
from ..data.cache import staged_entry
from ..errors import CheckpointError
from .decoder_loading import load_decoder, save_decoder_copy
from .stages import read_stage_meta, write_stage_meta, write_training_state


def noise_embedding(schedule, embedding: torch.Tensor, t: torch.Tensor,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """z = alpha(t) x + sigma(t) eps for standardised embeddings x [B, D] and levels t [B]: how
    the decoder sees the true embedding in training and a proposal at generation."""
    eps = torch.randn(embedding.shape, generator=generator, device=embedding.device)
    return schedule.alpha(t)[:, None] * embedding + schedule.sigma(t)[:, None] * eps


class SoftPrompt(nn.Module):
    """embedding [B, D], noise level t [B] -> soft tokens [B, P, H]."""

    def __init__(self, embed_dim: int, hidden_size: int, num_tokens: int = 8, width: int = 512):
        super().__init__()
        self.num_tokens, self.hidden_size = num_tokens, hidden_size
        self.time_features = 64
        self.net = nn.Sequential(nn.Linear(embed_dim + self.time_features, width), nn.GELU(),
                                 nn.Linear(width, num_tokens * hidden_size))

    def forward(self, embedding: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        features = torch.cat([embedding, timestep_embedding(t, self.time_features).to(embedding)], dim=-1)
        return self.net(features).view(embedding.shape[0], self.num_tokens, self.hidden_size)


class CausalLM(nn.Module):
    """A causal LM read through its input embeddings: `decoder` is a dlms `Transformer` (causal)
    or a Hugging Face causal LM. Token embeddings in, logits out, and sampling from there."""

    def __init__(self, decoder: nn.Module):
        super().__init__()
        self.decoder = decoder
        self.dlms = hasattr(decoder, "hidden") and hasattr(decoder, "logits")

    def token_embeddings(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [B, L] -> [B, L, H]."""
        return self.decoder.embed(ids) if self.dlms else self.decoder.get_input_embeddings()(ids)

    def logits(self, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """[B, L, H] -> logits [B, L, V] (float32), causal."""
        if self.dlms:
            return self.decoder.logits(self.decoder.hidden(inputs_embeds=inputs_embeds)).float()
        return self.decoder(inputs_embeds=inputs_embeds).logits.float()

    @torch.no_grad()
    def continue_from(self, inputs: torch.Tensor, max_tokens: int, temperature: float = 1.0,
                      eos_id: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Token ids [B, <= max_tokens] that follow the input embeddings [B, L, H] (temperature
        0: greedy); finished rows repeat eos_id."""
        out = []
        done = torch.zeros(inputs.shape[0], dtype=torch.bool, device=inputs.device)
        for _ in range(max_tokens):
            last = self.logits(inputs)[:, -1]
            if temperature <= 0:
                token = last.argmax(-1)
            else:
                token = torch.multinomial(F.softmax(last / temperature, -1), 1, generator=generator)[:, 0]
            if eos_id is not None:
                token = torch.where(done, torch.full_like(token, eos_id), token)
                done |= token == eos_id
            out.append(token)
            inputs = torch.cat([inputs, self.token_embeddings(token[:, None])], dim=1)
            if bool(done.all()):
                break
        return torch.stack(out, dim=1)


class SoftPromptedDecoder(CausalLM):
    """A `CausalLM` with a `SoftPrompt` of its hidden size between prefix and continuation."""

    def __init__(self, decoder: nn.Module, soft_prompt: SoftPrompt):
        super().__init__(decoder)
        self.soft_prompt = soft_prompt

    def inputs(self, prefix_ids: torch.Tensor, embedding: torch.Tensor, t: torch.Tensor,
               continuation_ids: torch.Tensor | None = None) -> torch.Tensor:
        """[prefix | soft tokens | continuation] embeddings [B, Lp + P (+ Lc), H]."""
        parts = [self.token_embeddings(prefix_ids), self.soft_prompt(embedding, t)]
        if continuation_ids is not None:
            parts.append(self.token_embeddings(continuation_ids))
        return torch.cat(parts, dim=1)

    def loss(self, prefix_ids: torch.Tensor, continuation_ids: torch.Tensor, embedding: torch.Tensor,
             t: torch.Tensor, continuation_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Mean cross-entropy of the continuation tokens [B, Lc] given the prefix and the soft
        prompt; `continuation_mask` bool [B, Lc] marks real (not padding) tokens."""
        logits = self.logits(self.inputs(prefix_ids, embedding, t, continuation_ids))
        start = prefix_ids.shape[1] + self.soft_prompt.num_tokens - 1  # the position that predicts token 0
        pred = logits[:, start:start + continuation_ids.shape[1]]
        ce = F.cross_entropy(pred.reshape(-1, pred.shape[-1]), continuation_ids.reshape(-1), reduction="none")
        ce = ce.view_as(continuation_ids).float()
        if continuation_mask is None:
            return ce.mean()
        mask = continuation_mask.float()
        return (ce * mask).sum() / mask.sum().clamp_min(1.0)

    @torch.no_grad()
    def generate(self, prefix_ids: torch.Tensor, embedding: torch.Tensor, t: torch.Tensor, max_tokens: int,
                 temperature: float = 1.0, eos_id: int | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Continuation ids [B, <= max_tokens] (temperature 0: greedy); rows stop at eos_id."""
        return self.continue_from(self.inputs(prefix_ids, embedding, t), max_tokens, temperature, eos_id, generator)


STAGE = "decoder"  # written into the stage's config.json
DECODER_DIR = "decoder"  # the fine-tuned decoder, inside the stage folder


def save_decoder_stage(folder: str | Path, model: SoftPromptedDecoder, decoder_name: str, tokenizer=None,
                       source: str | None = None, progress: dict | None = None,
                       optimizer_state: dict | None = None) -> Path:
    """Write the decoder stage atomically: config.json (stage, the base decoder's name, sizes),
    soft_prompt.safetensors, `decoder/` (the fine-tuned decoder as a folder that loads on its
    own, see `save_decoder_copy`; `source`: where its base was loaded from, default
    `decoder_name`) and, during training, its progress and optimizer state."""
    folder = Path(folder)
    sp = model.soft_prompt
    with staged_entry(folder, replace=True) as tmp:
        save_model(sp, str(tmp / "soft_prompt.safetensors"))
        save_decoder_copy(tmp / DECODER_DIR, source or decoder_name, model.decoder, tokenizer)
        write_stage_meta(tmp, STAGE, decoder=decoder_name, embed_dim=sp.net[0].in_features - sp.time_features,
                         hidden_size=sp.hidden_size, num_tokens=sp.num_tokens, width=sp.net[0].out_features,
                         positions=getattr(getattr(model.decoder, "spec", None), "max_seq_len", None))
        write_training_state(tmp, progress, optimizer_state)
    return folder


def load_decoder_stage(folder: str | Path, device: torch.device | str = "cpu") -> tuple[SoftPromptedDecoder, object]:
    """(the soft-prompted decoder, its tokenizer) from a folder written by `save_decoder_stage`;
    it needs nothing outside that folder. A missing, damaged or other-stage folder is a
    CheckpointError."""
    folder = Path(folder)
    meta = read_stage_meta(folder, STAGE, "decoder")
    try:
        base = load_decoder(str(folder / DECODER_DIR), device, positions=meta.get("positions"))
        model = SoftPromptedDecoder(base.model, SoftPrompt(meta["embed_dim"], meta["hidden_size"], meta["num_tokens"],
                                                           meta["width"]))
        load_model(model.soft_prompt, str(folder / "soft_prompt.safetensors"))
    except Exception as exc:  # noqa: BLE001  (safetensors, transformers and dlms raise several types)
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"decoder stage '{folder}' is damaged ({first}); retrain the decoder stage") from None
    return model.to(device).eval(), base.tokenizer
