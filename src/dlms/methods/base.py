"""What every method shares: the special token ids, the shape of a loss, and the prompt hook.

Response-only training (prompt/response data, dlms/data/prompt_response.py): a batch may carry
`prompt_len` (LongTensor [B], where each row's response starts). Every method takes it through
one hook, declared by the class attribute `trains_on_responses = True`:

- `loss(model, batch)` reads it with `response_mask(batch, x0)` (bool [B, L], True at the
  response positions; None for a batch without prompts);
- `sequence_nll(model, x0, labels, ..., maskable=mask)` holds the positions outside `mask`
  clean (never noised, never masked) and scores only those inside it: -log p(x0[mask] | x0[~mask]);
- `scored_tokens(x0, maskable=mask)` counts the tokens that likelihood is per (the response's
  tokens and its end-of-text, never padding).

So the prompt positions are conditioning only: they get no loss, and their logits no gradient.
The response region includes the end-of-text and the padding after it, which the diffusion
methods noise and score as in a plain padded row (LLaDA's supervised fine-tuning): the model
learns where a response stops. A method without `trains_on_responses` is refused for
prompt/response data at config time (`assembly.check_prompt_response`); the contract tests
(tests/contract/test_prompt_response.py) check the hook for every registered method.

Prompt dropout (`train.prompt_drop_prob`, the prompt's counterpart of `train.cond_drop_prob`): the
trainer marks some rows `batch["prompt_dropped"]` (bool [B]), and a method that declares
`drops_prompts = True` hides those rows' prompts (`dropped_prompts(batch, x0)`, bool [B, L]) the
way its samplers' unconditional branch hides a prompt under classifier-free guidance: the mask
token (masked, block), noised like the response at the row's t (gaussian). So the network also
learns p(response | no prompt), the branch that guidance on the prompt contrasts with. Hidden or
not, the prompt still gets no loss. `prompt_region` is the one definition of the positions hidden,
in training and at sampling (`DiffusionLM.sample_ids`). The contract tests
(tests/contract/test_dropped_prompts.py) check it for every registered method.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

PROMPT_LEN = "prompt_len"  # the batch key of each row's response start (data/loader.py)
PROMPT_DROPPED = "prompt_dropped"  # the batch key of the rows whose prompt is hidden this step (the trainer's)


@dataclass(frozen=True)
class SpecialTokens:
    """Ids of the special tokens and the vocabulary size (including added tokens); `sep`, the
    separator of prompt and response, only for a tokenizer built for prompt/response data."""

    pad: int
    bos: int
    eos: int
    mask: int
    vocab_size: int
    sep: int | None = None

    @classmethod
    def from_dict(cls, ids: dict) -> "SpecialTokens":
        sep = ids.get("sep")
        return cls(**{k: int(ids[k]) for k in ("pad", "bos", "eos", "mask", "vocab_size")},
                   sep=None if sep is None else int(sep))


@dataclass
class LossOutput:
    """The scalar to minimise and the figures worth logging (floats, already detached)."""

    loss: torch.Tensor
    metrics: dict[str, float] = field(default_factory=dict)


def response_mask(batch: dict, x0: torch.Tensor) -> torch.Tensor | None:
    """bool [B, L]: the positions at or after each row's `prompt_len` (the response region) for a
    batch of prompt/response rows x0 [B, L]; None when the batch has no `prompt_len`."""
    prompt_len = batch.get(PROMPT_LEN)
    if prompt_len is None:
        return None
    positions = torch.arange(x0.shape[1], device=x0.device)
    return positions[None, :] >= prompt_len.to(x0.device)[:, None]


def prompt_region(prompt_len: torch.Tensor, length: int) -> torch.Tensor:
    """bool [B, L]: positions 1 .. prompt_len - 1 of each row (prompt_len LongTensor [B]), the head
    `(task [sep]) prompt [sep]` after the start token: what prompt dropout hides in training and
    what guidance on the prompt hides in its unconditional branch at sampling. The start token
    stays: every row starts with it, with or without a prompt, so it says nothing of the prompt."""
    positions = torch.arange(length, device=prompt_len.device)[None, :]
    return (positions >= 1) & (positions < prompt_len[:, None])


def dropped_prompts(batch: dict, x0: torch.Tensor) -> torch.Tensor | None:
    """bool [B, L]: the prompt positions (`prompt_region`) of the rows whose prompt is dropped this
    step (`batch["prompt_dropped"]`, bool [B]) for rows x0 [B, L]; None for a batch without the key."""
    dropped, prompt_len = batch.get(PROMPT_DROPPED), batch.get(PROMPT_LEN)
    if dropped is None or prompt_len is None:
        return None
    return prompt_region(prompt_len.to(x0.device), x0.shape[1]) & dropped.to(x0.device)[:, None]


def scored_positions(x0: torch.Tensor, special: SpecialTokens, maskable: torch.Tensor | None = None) -> torch.Tensor:
    """x0 [B, L] -> bool [B, L]: the tokens a likelihood is normalised by (not pad, not a start token
    at position 0; with `maskable` bool [B, L], only those inside it: a response's tokens and its
    end-of-text)."""
    scored = x0 != special.pad
    # The start token by its position, not its id: where bos is eos (GPT-2, Qwen), every text also
    # ends with that id, and its end-of-text is a token like any other.
    scored[:, 0] &= x0[:, 0] != special.bos
    return scored if maskable is None else scored & maskable


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The backbone inside a DistributedDataParallel wrapper (or the model itself)."""
    return getattr(model, "module", model)
