"""What every method shares: its interface (`Method`), the special token ids, the shape of a loss,
and the prompt hook.

`Method` declares what the rest of dlms reads of a method: the names and likelihood entry points
every method defines, and each optional hook and capability with its default. Callers read them
as plain attributes; a method says what it does by overriding them, never by their absence.

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

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from ..config import RunConfig
from ..method_options import MethodConfig

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


class Method(ABC):
    """The interface of a method: the forward corruption, the training loss and the likelihood.

    Every registered method (dlms.methods.METHODS) subclasses it and sets the declarations without
    a default; the others are optional, and the default here is what a method that does not
    override them does. Shapes: x0 [B, L] token ids, labels [B] class ids (or None), maskable
    bool [B, L] (the positions scored; the others are held clean, like a prompt).
    """

    # ---- declared by every method
    name: ClassVar[str]  # its name in METHODS and in `method.name`
    options: ClassVar[type[MethodConfig]]  # its options dataclass (dlms/method_options/), registered beside it
    causal: ClassVar[bool]  # the backbone's attention: causal (ar) or bidirectional
    default_sampler: ClassVar[str]  # what `sample.sampler: auto` picks
    stochastic_bound: ClassVar[bool]  # sequence_nll is a Monte Carlo estimate of a bound (False: exact)

    # ---- capabilities, with their defaults
    supports_discrete_bound: ClassVar[bool] = False  # sequence_nll(discrete_steps=T): the T-step bound
    extends_past_training_length: ClassVar[bool] = False  # samples longer than the training rows
    trains_on_responses: ClassVar[bool] = False  # the prompt hook above: `maskable`, batch["prompt_len"]
    drops_prompts: ClassVar[bool] = False  # prompt dropout above: batch["prompt_dropped"]
    # Guidance on the prompt works on a run trained without prompt dropout (False: its unconditional
    # branch shows an input only prompt dropout trains, e.g. ar's mask tokens).
    guides_untrained_prompts: ClassVar[bool] = True
    needs_time: ClassVar[bool] = False  # the backbone must be time-conditioned (resolve_run_config turns it on)
    # It passes `positions` and an `attn_mask` to the backbone (block's two-copy forward): only a
    # backbone kind that takes them fits (dlms.backbones.BackboneKind.takes_attention_mask).
    needs_attention_mask: ClassVar[bool] = False
    # The network reads vectors [B, L, input_width(D)] (inputs_embeds) instead of token ids, D the
    # width of the token vectors (`table_dim`, or the backbone's own embeddings): gaussian.
    reads_vectors: ClassVar[bool] = False
    t_min: float = 0.0  # a stochastic bound integrates t over [t_min, 1]
    # The resolved noise schedule's name, saved in the run config; None: no schedule (ar).
    schedule_name: str | None = None
    # A model whose attention is causal across blocks of this size decodes only such blocks, each
    # with an exact cache (block diffusion); None: any block size.
    decoding_block: int | None = None

    def __init__(self, cfg: MethodConfig, special: SpecialTokens):
        self.cfg = cfg
        self.special = special

    # ---- hooks, with their defaults
    @classmethod
    def check_run_config(cls, cfg: RunConfig) -> None:
        """Raise a one-line ConfigError for a run this method cannot train (called before any
        data work, and again once data.seq_len is known); by default every run is fine."""

    def prepare_backbone(self, backbone: torch.nn.Module) -> None:
        """Before training, before DDP and the optimizer see the backbone (e.g. frozen embeddings);
        by default nothing."""

    def table_dim(self, pretrained: bool) -> int:
        """With `reads_vectors`: the width of the method's own token table, 0 for the backbone's
        input embeddings (`pretrained`: the backbone is a pretrained Hugging Face model)."""
        return 0

    def input_width(self, embed_dim: int) -> int:
        """With `reads_vectors`: the width of the network's input for token vectors `embed_dim`
        wide; by default the vectors themselves."""
        return embed_dim

    def attention_mask(self, length: int, device: torch.device) -> torch.Tensor | None:
        """The attention pattern to sample with, bool [length, length]; None: the backbone's own
        (every position sees every other, or causal for a causal method)."""
        return None

    # ---- the loss and the likelihood
    @abstractmethod
    def loss(self, model: torch.nn.Module, batch: dict) -> LossOutput:
        """The training loss of a batch: batch["input_ids"] [B, L], optional "labels" [B],
        "prompt_len" [B] and "prompt_dropped" [B]."""

    @abstractmethod
    def sequence_nll(self, model: torch.nn.Module, x0: torch.Tensor, labels: torch.Tensor | None = None, *,
                     maskable: torch.Tensor | None = None) -> torch.Tensor:
        """-log p(x0) per sequence in nats (a one-sample estimate of a bound when
        `stochastic_bound`): x0 [B, L] -> [B]; with `maskable` -log p(x0[maskable] | x0[~maskable]).
        A stochastic bound also takes `t` [B] (times), `u` [B, L] (uniforms of the noise) and,
        with `supports_discrete_bound`, `discrete_steps`."""

    @abstractmethod
    def scored_tokens(self, x0: torch.Tensor, maskable: torch.Tensor | None = None) -> torch.Tensor:
        """The tokens each sequence's likelihood is normalised by: x0 [B, L] -> [B] (with
        `maskable` bool [B, L], those inside it)."""


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
