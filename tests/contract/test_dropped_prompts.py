"""Contract tests of prompt dropout (`train.prompt_drop_prob`, methods/base.py) over every registered method.

The grid is read from the method registry. A method that declares `drops_prompts`:

- with every row's prompt dropped, its loss shows the network every prompt position hidden (the
  mask token, or without the clean flag) and the start token as it is; with none dropped, none;
- hides exactly the positions that each of its samplers' unconditional branch hides under
  guidance on the prompt through `DiffusionLM.sample_ids` (one definition: `prompt_region`);
- gives the prompt positions no loss either way (no gradient, and noise on their outputs changes
  nothing);

and a method that does not declare it is refused with one ConfigError when asked for it.
"""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from dlms.assembly import check_prompt_response, resolve_run_config, special_tokens
from dlms.backbones import build_backbone
from dlms.config import config_from_dict
from dlms.data.prompt_response import ensure_sep_token
from dlms.data.tokenizer import train_bpe_tokenizer
from dlms.errors import ConfigError
from dlms.methods import METHODS, Method, build_method
from dlms.methods.base import PROMPT_DROPPED, prompt_region
from dlms.model import DiffusionLM
from dlms.samplers import SAMPLERS
from tests.contract.test_prompt_response import L, PROMPT_LEN, ROWS, SPECIAL, Capture, batch, column_positions

DROPPING = [m for m in METHODS.names() if METHODS.get(m).drops_prompts]


def shown(call: dict, mask_id: int, length: int) -> torch.Tensor:
    """bool [R, length]: the positions a network call was shown as they are: a token other than
    the mask token (token inputs; block's two-copy input: its noisy copy), or the clean flag (the
    last channel of gaussian's inputs_embeds). Positions past a shorter call (ar's inputs stop one
    short of the row; its first sampling call is the prompt) count as shown: nothing hid them."""
    if call["input_ids"] is not None:
        seen = call["input_ids"][:, :length] != mask_id
    else:
        seen = call["inputs_embeds"][:, :length, -1] > 0.5
    return torch.nn.functional.pad(seen, (0, length - seen.shape[1]), value=True)


def record_calls(model) -> tuple[list[dict], object]:
    """A forward pre-hook on `model` that keeps each call's input_ids or inputs_embeds; (calls, handle)."""
    calls: list[dict] = []

    def hook(module, args, kwargs):
        ids = args[0] if args else kwargs.get("input_ids")
        embeds = kwargs.get("inputs_embeds")
        calls.append({"input_ids": None if ids is None else ids.detach().clone(),
                      "inputs_embeds": None if embeds is None else embeds.detach().clone()})

    return calls, model.register_forward_pre_hook(hook, with_kwargs=True)


def built(name: str, special, seq_len: int = L, seed: int = 0):
    """(resolved config, method, tiny built-in backbone) of a prompt/response run of method `name`."""
    cfg = config_from_dict({"method": {"name": name}, "model": {"preset": "tiny"},
                            "data": {"seq_len": seq_len, "format": "prompt_response"},
                            "train": {"prompt_drop_prob": 0.5}})
    method = build_method(cfg.method, special)
    cfg = resolve_run_config(cfg, method)
    torch.manual_seed(seed)
    return cfg, method, build_backbone(cfg.model, special.vocab_size)


def training_input(method, model, rows: torch.Tensor, prompt_len: torch.Tensor, dropped: bool) -> dict:
    """The network's input of the last call of `method.loss` on prompt/response rows [B, L] with
    every row's prompt dropped (or none), at a fixed seed."""
    calls, handle = record_calls(model)
    torch.manual_seed(3)
    data = {"input_ids": rows.clone(), "labels": None, "prompt_len": prompt_len.clone(),
            PROMPT_DROPPED: torch.full((rows.shape[0],), dropped)}
    with torch.no_grad():
        method.loss(model, data)
    handle.remove()
    return calls[-1]


@pytest.mark.parametrize("name", DROPPING)
def test_a_dropped_prompt_is_hidden_everywhere_and_only_there(name):
    method, model = built(name, SPECIAL)[1:]
    model.eval()
    prompt = torch.arange(L)[None, :] < PROMPT_LEN[:, None]
    region = prompt_region(PROMPT_LEN, L)
    dropped = shown(training_input(method, model, ROWS, PROMPT_LEN, True), SPECIAL.mask, L)
    kept = shown(training_input(method, model, ROWS, PROMPT_LEN, False), SPECIAL.mask, L)
    assert not (dropped & region).any()  # every prompt position hidden (task, prompt, separators)...
    assert dropped[:, 0].all()  # ...but the start token, which every row has
    assert kept[prompt].all()  # none dropped: the whole prompt shown
    # The response is noised as without dropout: only the prompt changed.
    assert torch.equal(dropped & ~prompt, kept & ~prompt)


@pytest.mark.parametrize("name", DROPPING)
def test_dropped_prompts_still_get_no_loss(name):
    method, model = built(name, SPECIAL)[1:]
    model.train()
    wrapped = Capture(model, method)
    data = {**batch(), PROMPT_DROPPED: torch.ones(ROWS.shape[0], dtype=torch.bool)}
    torch.manual_seed(1)
    method.loss(wrapped, data).loss.backward()
    graded = [out for out in wrapped.outputs if out.grad is not None]
    assert graded
    prompt_grad = response_grad = 0.0
    for out in graded:
        pos = column_positions(method, out.shape[1])
        prompt = (pos[None, :] < PROMPT_LEN[:, None]) & (pos[None, :] < L)
        per_column = out.grad.abs().sum(-1)
        prompt_grad += float(per_column[prompt].sum())
        response_grad += float(per_column[~prompt & (pos[None, :] < L)].sum())
    assert prompt_grad == 0.0 and response_grad > 0.0
    # Noise on the outputs at the (hidden) prompt positions changes nothing.
    model.eval()
    losses = []
    for noise in (0.0, 30.0):
        torch.manual_seed(5)
        with torch.no_grad():
            losses.append(method.loss(Capture(model, method, noise), dict(data)).loss)
    torch.testing.assert_close(losses[0], losses[1])


@pytest.fixture(scope="module")
def tokenizer():
    texts = [f"the {n} serves {f} food ." for n in ("eagle", "mill", "aromi") for f in ("thai", "french")]
    return ensure_sep_token(train_bpe_tokenizer(texts * 20, 300))


GUIDED = [(m, s) for m in DROPPING for s in SAMPLERS.names()
          if m in SAMPLERS.get(s).method_names and getattr(SAMPLERS.get(s), "prompt_guidance", False)]


@pytest.mark.parametrize("name, sampler", GUIDED, ids=["-".join(p) for p in GUIDED])
def test_training_hides_what_guidance_hides_at_sampling(tokenizer, name, sampler):
    """The positions a dropped prompt hides in training are the ones the sampler's unconditional
    branch hides under guidance on the prompt, through DiffusionLM.sample_ids (task and separators too)."""
    special = special_tokens(tokenizer)
    length = 24
    cfg, method, model = built(name, special, seq_len=length)
    cfg = replace(cfg, data=replace(cfg.data, task_column="kind"))
    lm = DiffusionLM(cfg, method, model, tokenizer, {}, torch.device("cpu"), "fp32")
    head = lm.encode_prompt("eagle thai", "list")
    calls, handle = record_calls(lm.model)
    steps = {"steps": 2} if "num_steps" in SAMPLERS.get(sampler).options else {}
    lm.sample_ids("eagle thai", task="list", guidance=2.0, sampler=sampler, seed=0, num_samples=1, **steps)
    handle.remove()
    first = calls[0]  # a guided call: the conditional row, then the unconditional one
    cond, uncond = shown(first, special.mask, length).chunk(2)
    hidden_at_sampling = cond & ~uncond  # [1, length]
    row = torch.tensor([head + [special.eos] + [special.pad] * (length - len(head) - 1)])
    prompt_len = torch.tensor([len(head)])
    hidden_in_training = ~shown(training_input(method, model, row, prompt_len, True), special.mask, length)
    hidden_in_training &= torch.arange(length)[None, :] < len(head)  # (the response may be noised too)
    assert torch.equal(hidden_at_sampling, hidden_in_training)
    assert torch.equal(hidden_in_training, prompt_region(prompt_len, length))
    assert int(hidden_in_training.sum()) == len(head) - 1  # all of the head but its start token


def test_a_method_without_prompt_dropout_refuses_it(monkeypatch):
    """A method registered later without `drops_prompts` is refused with one ConfigError."""
    class NoDropout(Method):  # `drops_prompts` left at Method's default
        name = "nodropout"
        trains_on_responses = True

    monkeypatch.setitem(METHODS._entries, "nodropout", NoDropout)
    cfg = config_from_dict({"data": {"format": "prompt_response"}, "train": {"prompt_drop_prob": 0.1}})
    cfg = replace(cfg, method=replace(cfg.method, name="nodropout"))
    with pytest.raises(ConfigError, match="method 'nodropout' cannot drop prompts .*train.prompt_drop_prob=0 or use "
                                          f"one of: {', '.join(DROPPING)}"):
        check_prompt_response(cfg)
    check_prompt_response(replace(cfg, train=replace(cfg.train, prompt_drop_prob=0.0)))  # without it: fine


def test_the_grid_is_not_empty():
    assert {"ar", "masked", "block", "gaussian"} <= set(DROPPING)
    assert {("ar", "ar"), ("masked", "confidence"), ("gaussian", "ddpm")} <= set(GUIDED)
