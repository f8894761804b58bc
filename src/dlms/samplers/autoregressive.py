"""Autoregressive decoding with a KV cache: greedy, temperature, top-k and top-p."""
from __future__ import annotations

import torch

from .common import Sampler, SamplerStats, check_canvas, filter_logits, sample_categorical
from .guidance import guided_logits, mix_guidance
from .randomness import Generators
from .masked import StepCallback


def compute_dtype(param: torch.Tensor) -> torch.dtype:
    """The dtype a network with weights like `param` computes keys and values in: autocast's
    (bf16) inside an autocast region on its device, else the weights' own. A KV cache of that
    dtype stores them as they are; a float32 cache under bf16 autocast takes twice the memory
    and is cast back to bf16, all of it, at every step."""
    if torch.is_autocast_enabled(param.device.type):
        return torch.get_autocast_dtype(param.device.type)
    return param.dtype


class AutoregressiveSampler(Sampler):
    """Left-to-right decoding; the fixed positions must be a prompt prefix (the same length
    in every row). Rows that emitted end-of-text are padded from there on.

    Guidance (`guidance_scale` != 1) contrasts a label with the null class, or without labels the
    prompt with the prompt hidden: `prompt` (bool [B, L], inside the prefix) marks the positions
    the unconditional row shows as the mask token, as prompt dropout showed them in training
    (methods/autoregressive.py). Both rows share one batch of 2B and one KV cache. `confidence`
    (with a callback): each generated token's probability, NaN elsewhere."""

    name = "ar"
    method_names = ("ar",)
    options = ("temperature", "top_k", "top_p", "guidance_scale")  # one token per step: no num_steps
    prompt_guidance = True  # without labels, guidance contrasts the prompt with the prompt masked (`prompt`)

    @torch.no_grad()
    def sample(self, canvas: torch.Tensor, fixed: torch.Tensor | None = None, *, labels: torch.Tensor | None = None,
               guidance_scale: float = 1.0, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
               generator: Generators = None, callback: StepCallback = None,
               prompt: torch.Tensor | None = None) -> torch.Tensor:
        fixed = check_canvas(canvas, fixed)
        batch, length = canvas.shape
        prefix = int(fixed[0].sum())
        if prefix == 0 or not (fixed[:, :prefix].all() and not fixed[:, prefix:].any()):
            raise ValueError("autoregressive sampling needs a non-empty prompt prefix of the same length in every row")
        special = self.method.special
        on_label = labels is not None and guidance_scale != 1.0
        on_prompt = labels is None and guidance_scale != 1.0 and prompt is not None and bool(prompt[:, :prefix].any())
        reps = 2 if on_label or on_prompt else 1
        param = next(self.model.parameters())
        cache = self.model.new_cache(batch * reps, length, param.device, compute_dtype(param))
        out = canvas.clone()
        done = torch.zeros(batch, dtype=torch.bool, device=canvas.device)
        step_input = out[:, :prefix].repeat(reps, 1)  # [reps * B, prefix]: the guided rows follow the batch
        if on_prompt:  # the unconditional rows: the prompt shown as mask tokens, in the same cache
            step_input[batch:] = step_input[batch:].masked_fill(prompt[:, :prefix], special.mask)
        self.stats = SamplerStats()
        self.confidence = torch.full(canvas.shape, float("nan"), device=canvas.device) if callback else None
        for pos in range(prefix, length):
            def forward(lab):
                return self.model(step_input, labels=lab, cache=cache)[:, -1]

            if on_label:
                logits = guided_logits(forward, labels, self.model.null_class, guidance_scale)
            elif on_prompt:
                cond, uncond = forward(None).float().chunk(2)
                logits = mix_guidance(cond, uncond, guidance_scale)
            else:
                logits = forward(labels)
            logits = logits.float()
            logits[:, special.mask] = float("-inf")
            logits[:, special.pad] = float("-inf")
            logits = filter_logits(logits, top_k, top_p)
            token = sample_categorical(logits, temperature, generator)
            if self.confidence is not None:
                self.confidence[:, pos] = logits.softmax(-1).gather(-1, token[:, None]).squeeze(-1)
            token = torch.where(done, torch.full_like(token, special.pad), token)
            out[:, pos] = token
            done |= token == special.eos
            step_input = token[:, None].repeat(reps, 1)
            self.stats.steps += 1
            self.stats.network_calls += 1
            if callback:
                callback(pos - prefix + 1, length - prefix, out)
            if done.all():
                out[:, pos + 1 :] = special.pad
                break
        return out
