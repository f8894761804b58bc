"""Contract tests of response-only training (prompt/response data) over every registered method.

The grid is read from the method registry, so a method registered later is covered the day it
is: it declares the prompt hook (`trains_on_responses`, methods/base.py) and then

- its loss gives the prompt positions' logits no gradient, the response positions' some (for a
  diffusion method the end-of-text padding of the response too: the model learns where to stop);
- its loss and its likelihood do not change when the outputs at the prompt positions do;
- the likelihood of a split with prompts is per response token;
- a run trained on a tiny prompt/response file samples with every compatible sampler without
  ever changing the prompt's positions (task tokens and separators included);

or it does not declare it, and a prompt/response run of it is one ConfigError.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from dlms.assembly import check_prompt_response, resolve_run_config
from dlms.backbones import build_backbone
from dlms.cli import main
from dlms.config import config_from_dict
from dlms.errors import ConfigError
from dlms.likelihood import evaluate_likelihood
from dlms.methods import METHODS, Method, SpecialTokens, build_method
from dlms.model import DiffusionLM
from dlms.samplers import SAMPLERS
from tests.conftest import tiny_overrides

SPECIAL = SpecialTokens(pad=0, bos=1, eos=2, mask=3, vocab_size=24, sep=4)
L = 12
# bos prompt sep | response eos pad...: the response starts at PROMPT_LEN (the position after sep).
ROWS = torch.tensor([
    [1, 7, 8, 9, 4, 10, 11, 12, 2, 0, 0, 0],
    [1, 13, 4, 14, 15, 16, 17, 2, 0, 0, 0, 0],
    [1, 5, 6, 7, 8, 9, 4, 18, 19, 20, 21, 2],
    [1, 22, 23, 4, 5, 2, 0, 0, 0, 0, 0, 0],
] * 2)
PROMPT_LEN = torch.tensor([5, 3, 7, 4] * 2)
RESPONSIVE = [m for m in METHODS.names() if METHODS.get(m).trains_on_responses]


def method_and_model(name: str, seed: int = 0):
    """The method `name` and a tiny built-in backbone resolved for it, as training builds them."""
    cfg = config_from_dict({"method": {"name": name}, "model": {"preset": "tiny"}, "data": {"seq_len": L}})
    method = build_method(cfg.method, SPECIAL)
    cfg = resolve_run_config(cfg, method)
    torch.manual_seed(seed)
    return method, build_backbone(cfg.model, SPECIAL.vocab_size)


def column_positions(method, width: int) -> torch.Tensor:
    """The position whose token each logit column predicts: [width]. A causal model's column j
    predicts position j + 1; block diffusion's two-copy forward has columns L..2L-1 for the clean copy."""
    return torch.arange(width) % L + (1 if method.causal else 0)


class Capture(nn.Module):
    """Wraps a backbone (as DDP does: `module`), keeps every full logits tensor it returns with
    its gradient, and adds `noise` to the logits of the columns that predict positions before
    `prompt_len` [B] (default: the rows' prompts)."""

    def __init__(self, inner, method, noise: float = 0.0, prompt_len: torch.Tensor = PROMPT_LEN):
        super().__init__()
        self.module, self.method, self.noise, self.prompt_len = inner, method, noise, prompt_len
        self.spec = inner.spec
        self.outputs: list[torch.Tensor] = []

    def forward(self, input_ids=None, *, select=None, **kwargs):
        logits = self.module(input_ids, **kwargs)
        if logits.requires_grad:
            logits.retain_grad()
        self.outputs.append(logits)
        if self.noise:
            rows = self.prompt_len.repeat(logits.shape[0] // len(self.prompt_len))  # gaussian's bound: 2B rows
            prompt = column_positions(self.method, logits.shape[1])[None, :] < rows[:, None]
            noise = self.noise * torch.randn(logits.shape, generator=torch.Generator().manual_seed(7))
            logits = torch.where(prompt[..., None], logits + noise, logits)
        return logits if select is None else logits[select]


def batch() -> dict:
    return {"input_ids": ROWS.clone(), "labels": None, "prompt_len": PROMPT_LEN.clone()}


def test_every_method_declares_whether_it_trains_on_responses():
    """Every built-in method has the hook; the list is the registry's, so a new method is listed here."""
    assert set(RESPONSIVE) == set(METHODS.names())


@pytest.mark.parametrize("name", RESPONSIVE)
def test_prompt_positions_get_no_gradient(name):
    method, model = method_and_model(name)
    model.train()
    wrapped = Capture(model, method)
    torch.manual_seed(1)
    method.loss(wrapped, batch()).loss.backward()
    graded = [out for out in wrapped.outputs if out.grad is not None]
    assert graded, "the loss reached no logits"
    prompt_grad, response_grad, pad_grad = 0.0, 0.0, 0.0
    for out in graded:
        pos = column_positions(method, out.shape[1])
        per_column = out.grad.abs().sum(-1)  # [B, width]
        in_row = pos[None, :] < L
        prompt = (pos[None, :] < PROMPT_LEN[:, None]) & in_row
        target = ROWS.gather(1, pos.clamp(max=L - 1)[None, :].expand(ROWS.shape[0], -1))
        prompt_grad += float(per_column[prompt].sum())
        response_grad += float(per_column[~prompt & in_row].sum())
        pad_grad += float(per_column[~prompt & in_row & (target == SPECIAL.pad)].sum())
    assert prompt_grad == 0.0
    assert response_grad > 0.0
    if method.causal:
        assert pad_grad == 0.0  # pads after the end-of-text are not modelled
    else:
        assert pad_grad > 0.0  # the response's end-of-text padding is noised and scored (LLaDA)


@pytest.mark.parametrize("name", RESPONSIVE)
def test_outputs_at_prompt_positions_change_neither_loss_nor_likelihood(name):
    method, model = method_and_model(name)
    model.eval()
    t = torch.full((ROWS.shape[0],), 0.6)
    u = torch.rand(ROWS.shape, generator=torch.Generator().manual_seed(3))
    maskable = torch.arange(L)[None, :] >= PROMPT_LEN[:, None]
    stochastic = {"t": t, "u": u} if method.stochastic_bound else {}
    results = []
    for noise in (0.0, 30.0):
        wrapped = Capture(model, method, noise)
        torch.manual_seed(5)
        with torch.no_grad():
            loss = method.loss(wrapped, batch()).loss
            nll = method.sequence_nll(wrapped, ROWS, maskable=maskable, **stochastic)
        results.append((loss, nll))
    torch.testing.assert_close(results[0][0], results[1][0])
    torch.testing.assert_close(results[0][1], results[1][1])
    assert (results[0][1] > 0).all()
    # ...while the same noise on every position does change them: the test can fail.
    everywhere = Capture(model, method, 30.0, prompt_len=torch.full_like(PROMPT_LEN, L + 1))
    with torch.no_grad():
        changed = method.sequence_nll(everywhere, ROWS, maskable=maskable, **stochastic)
    assert not torch.allclose(changed, results[0][1])


class FakeSplit:
    def __init__(self, ids, prompt_len):
        self.ids, self.prompt_len = ids, prompt_len
        self.labels, self.label_columns = None, []

    def __len__(self):
        return len(self.ids)


@pytest.mark.parametrize("name", RESPONSIVE)
def test_the_likelihood_of_prompted_rows_is_per_response_token(name):
    method, model = method_and_model(name)
    ids = ROWS.numpy().astype(np.int32)
    prompted = evaluate_likelihood(method, model, FakeSplit(ids, PROMPT_LEN.numpy()), batch_size=3, passes=2)
    whole = evaluate_likelihood(method, model, FakeSplit(ids, None), batch_size=3, passes=2)
    response_tokens = int(sum(((ROWS[i, PROMPT_LEN[i]:] != SPECIAL.pad).sum()) for i in range(len(ROWS))))
    assert prompted["tokens"] == response_tokens  # the response's tokens and its end-of-text
    assert whole["tokens"] > response_tokens
    assert np.isfinite(prompted["nll"]) and prompted["nll"] > 0


def test_a_method_without_the_hook_is_refused_for_prompt_response_data(monkeypatch):
    class NoHook(Method):  # `trains_on_responses` left at Method's default
        name = "nohook"

    monkeypatch.setitem(METHODS._entries, "nohook", NoHook)
    cfg = config_from_dict({"data": {"format": "prompt_response"}})
    cfg = replace(cfg, method=replace(cfg.method, name="nohook"))
    with pytest.raises(ConfigError, match="method 'nohook' cannot train on prompt/response data.*use one of: ar"):
        check_prompt_response(cfg)
    check_prompt_response(replace(cfg, data=replace(cfg.data, format="text")))  # plain text: fine


# ---------------------------------------------------------------------- trained runs


PAIRS = [(f"{n} {f}", f"the {n} serves {f} food .") for n in ("eagle", "mill", "aromi") for f in ("thai", "french")]


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    rows = [{"prompt": p, "response": r, "kind": k} for (p, r), k in zip(PAIRS * 10, ["list", "tell", None] * 20)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def runs(data_file, tmp_path_factory):
    cache: dict[str, DiffusionLM] = {}

    def get(name: str) -> DiffusionLM:
        if name not in cache:
            out = tmp_path_factory.mktemp(f"pr-{name}")
            args = tiny_overrides(out, name, 2, **{
                "data.dataset": str(data_file), "data.format": "prompt_response", "data.task_column": "kind",
                "data.seq_len": 40, "data.vocab_size": 320, "train.batch_size": 4, "train.eval_every": 2,
                "train.save_every": 2, "train.eval_batches": 1, "sample.num_steps": 4})
            assert main(["train", "--samples", "0", *args]) == 0
            cache[name] = DiffusionLM.load_checkpoint(out, device="cpu")
        return cache[name]

    return get


SAMPLES = [(m, s) for m in RESPONSIVE for s in SAMPLERS.names() if m in SAMPLERS.get(s).method_names]


@pytest.mark.parametrize("name, sampler", SAMPLES, ids=["-".join(p) for p in SAMPLES])
def test_sampling_never_changes_the_prompt(runs, name, sampler):
    lm = runs(name)
    assert lm.prompted
    head = lm.encode_prompt("eagle thai", "list")
    sep = lm.method.special.sep
    assert head[0] == lm.method.special.bos and head[-1] == sep and head.count(sep) == 2
    steps = {"steps": 4} if "num_steps" in SAMPLERS.get(sampler).options else {}
    ids = lm.sample_ids("eagle thai", task="list", num_samples=2, sampler=sampler, seed=0, **steps)
    assert (ids[:, : len(head)] == torch.tensor(head)).all()
    assert not (ids == lm.method.special.mask).any()
    texts = lm.sample("eagle thai", task="list", num_samples=2, sampler=sampler, seed=0, **steps)
    assert len(texts) == 2 and all("eagle thai" not in t for t in texts)  # responses only
    replies = lm.respond(["eagle thai", "mill french"], task=["list", None], sampler=sampler, **steps)
    assert len(replies) == 2 and all(isinstance(r, str) for r in replies)


@pytest.mark.parametrize("name", RESPONSIVE)
def test_a_trained_run_evaluates_only_response_tokens(runs, name):
    lm = runs(name)
    data = lm.dataset()
    val = data.val
    result = lm.evaluate(passes=2)
    expected = sum(int(np.count_nonzero(np.asarray(val.ids[i, int(val.prompt_len[i]):]) != lm.method.special.pad))
                   for i in range(len(val)))
    assert result["tokens"] == expected and np.isfinite(result["nll"])
    # Scoring a response given a prompt lays the prompt out as training did.
    scored = lm.score_continuations([("eagle thai", "the eagle serves thai food .")], passes=2)[0]
    response = lm.tokenizer.encode("the eagle serves thai food .", add_special_tokens=False)
    assert scored["tokens"] == len(response) and np.isfinite(scored["logprob"]) and scored["logprob"] < 0


def test_an_ar_run_trained_on_prompts_cannot_be_a_dglm_decoder(runs):
    from dlms.dglm.config import dglm_config_from_dict
    from dlms.dglm.decoder_loading import load_decoder

    lm = runs("ar")
    run = Path(lm.cfg.train.out_dir)
    with pytest.raises(ConfigError, match="DGLM cannot train on prompt/response data"):
        load_decoder(str(run))
    with pytest.raises(ConfigError, match="config key 'data.prompt_column': DGLM cannot train on prompt/response"):
        dglm_config_from_dict({"data": {"prompt_column": "q"}})
