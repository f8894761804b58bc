"""Masked decoding by blocks, with caches and confidence thresholds, over every registered
masked sampler: steps and network calls are counted honestly, blocks go left to right, a text
ends where the model ended it, and the update rules do what their docstrings say."""
from __future__ import annotations

import inspect

import pytest
import torch

from dlms.backbones import build_backbone, resolve_model_config
from dlms.config import ModelConfig
from dlms.method_options import BlockOptions, MaskedOptions
from dlms.methods import SpecialTokens, build_method
from dlms.samplers import SAMPLERS, build_sampler
from tests.backbone_helpers import NoEnds
from dlms.samplers.unmasking import (commit_above_threshold, commit_by_factor, commit_most_confident,
                                     confidence_scores, even_quota)

SPECIAL = SpecialTokens(pad=0, bos=1, eos=2, mask=3, vocab_size=16)
L = 16
MASKED = build_method(MaskedOptions(), SPECIAL)
MASKED_SAMPLERS = [n for n in SAMPLERS.names() if "masked" in SAMPLERS.get(n).method_names]


def tiny(seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    cfg = resolve_model_config(ModelConfig(preset="tiny", **kwargs), seq_len=L, causal=False)
    return build_backbone(cfg, SPECIAL.vocab_size).eval()


MODEL = tiny()
NO_ENDS = NoEnds(MODEL, SPECIAL)


def canvas(batch: int = 3, last_fixed: bool = True):
    """bos at position 0 and, with `last_fixed`, a fixed last token so that no text ends early."""
    x = torch.full((batch, L), SPECIAL.mask)
    x[:, 0] = SPECIAL.bos
    if last_fixed:
        x[:, -1] = 7
    return x, x != SPECIAL.mask


def options_for(name: str, **extra):
    takes = SAMPLERS.get(name).options
    wanted = {"num_steps": 8, **extra}
    return {k: v for k, v in wanted.items() if k in takes}


class CountCalls:
    """Counts passes through the network: `forward` runs `hidden` once, and a block-diffusion
    model's clean-block writes call `hidden` directly."""

    def __init__(self, model):
        self.calls = 0
        self.hidden = model.hidden
        model.hidden = self._hidden
        self.model = model

    def _hidden(self, *args, **kwargs):
        self.calls += 1
        return self.hidden(*args, **kwargs)

    def close(self):
        del self.model.hidden


@pytest.mark.parametrize("name", MASKED_SAMPLERS)
@pytest.mark.parametrize("block_size", [None, 4])
def test_stats_count_the_steps_and_the_network_calls(name, block_size):
    sampler = build_sampler(name, MASKED, MODEL)
    x, fixed = canvas()
    steps = []
    counter = CountCalls(MODEL)
    try:
        out = sampler.sample(x, fixed, generator=torch.Generator().manual_seed(0), block_size=block_size,
                             callback=lambda i, n, state: steps.append(i), **options_for(name))
    finally:
        counter.close()
    assert sampler.stats.steps == len(steps) == steps[-1]
    assert sampler.stats.network_calls == counter.calls > 0
    assert not (out == SPECIAL.mask).any() and torch.equal(out[fixed], x[fixed])


@pytest.mark.parametrize("name", MASKED_SAMPLERS)
def test_blocks_are_decoded_left_to_right(name):
    sampler = build_sampler(name, MASKED, MODEL)
    x, fixed = canvas()
    states = []
    sampler.sample(x, fixed, generator=torch.Generator().manual_seed(1), block_size=4,
                   callback=lambda i, n, state: states.append(state.clone()), **options_for(name))
    block_of = torch.arange(L) // 4
    for state in states:
        for row in state:
            open_blocks = block_of[row == SPECIAL.mask].unique()
            # Every position before the first block with a mask is decoded; at most that one
            # block is partly decoded and everything after it is still masked (or fixed).
            if open_blocks.numel():
                first = int(open_blocks.min())
                later = (block_of > first) & ~fixed[0]
                assert (row[later] == SPECIAL.mask).all()


@pytest.mark.parametrize("name", [n for n in MASKED_SAMPLERS if "cache" in SAMPLERS.get(n).options])
def test_dual_cache_over_the_whole_canvas_is_exact(name):
    """With one block covering the canvas, every dual-cache call recomputes every position:
    the same tokens as without a cache."""
    x, fixed = canvas()
    runs = [build_sampler(name, MASKED, MODEL).sample(x, fixed, generator=torch.Generator().manual_seed(2),
                                                       block_size=L, cache=cache, **options_for(name))
            for cache in ("none", "dual")]
    assert torch.equal(*runs)


@pytest.mark.parametrize("name", [n for n in MASKED_SAMPLERS if "cache" in SAMPLERS.get(n).options])
@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_caches_decode_valid_canvases_and_call_the_network_on_less(name, cache):
    x, fixed = canvas()
    sampler = build_sampler(name, MASKED, MODEL)
    out = sampler.sample(x, fixed, generator=torch.Generator().manual_seed(3), block_size=4, cache=cache,
                         **options_for(name))
    assert not (out == SPECIAL.mask).any() and torch.equal(out[fixed], x[fixed])


BLOCK = build_method(BlockOptions(block_size=4), SPECIAL)


def tiny_block(seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    cfg = resolve_model_config(ModelConfig(preset="tiny", **kwargs), seq_len=L, causal=False)
    return build_backbone(cfg, SPECIAL.vocab_size).eval()


@pytest.mark.parametrize("name", [n for n in MASKED_SAMPLERS if "cache" in SAMPLERS.get(n).options
                                  and "block" in SAMPLERS.get(n).method_names])
@pytest.mark.parametrize("time_conditioning", [False, True])
@pytest.mark.parametrize("prompt_len", [1, 6])
def test_block_diffusion_exact_cache_is_exact_and_stores_finished_blocks_for_free(name, time_conditioning,
                                                                                  prompt_len):
    """A block-diffusion model's cache changes no token (its attention never looks ahead). A
    model that does not see the time stores each finished block (and a prompt of several
    blocks) within the next block's first call: exactly as many calls as steps; one that sees the
    time pays one call per finished block but the last."""
    model = tiny_block(time_conditioning=time_conditioning)
    x = torch.full((3, L), SPECIAL.mask)
    x[:, :prompt_len] = torch.arange(5, 5 + prompt_len)
    x[:, -1] = 7  # no text ends early
    fixed = x != SPECIAL.mask
    runs, samplers = [], []
    for cache in ("none", "dual"):
        sampler = build_sampler(name, BLOCK, model)
        runs.append(sampler.sample(x, fixed, generator=torch.Generator().manual_seed(4), cache=cache,
                                   **options_for(name)))
        samplers.append(sampler)
    assert torch.equal(*runs)
    cached = samplers[1].stats
    written_blocks = len(range(prompt_len // 4 * 4, L, 4))  # blocks that hold a free position
    extra = 0 if not time_conditioning else written_blocks - 1 + prompt_len // 4
    assert cached.network_calls == cached.steps + extra


def test_cache_needs_the_builtin_transformer():
    from dlms.errors import ArgumentError

    class Plain(torch.nn.Module):
        spec = MODEL.spec

        def parameters(self):
            return MODEL.parameters()

    sampler = build_sampler("confidence", MASKED, Plain())
    x, fixed = canvas()
    with pytest.raises(ArgumentError, match="built-in transformer"):
        sampler.sample(x, fixed, cache="dual")


def test_threshold_commits_everything_sure_and_one_at_a_time_when_unsure():
    x, fixed = canvas(last_fixed=True)
    sampler = build_sampler("threshold", MASKED, NO_ENDS)
    sampler.sample(x, fixed, threshold=1e-9, block_size=4, generator=torch.Generator().manual_seed(0))
    assert sampler.stats.steps == 4  # every candidate passes: one step per block
    sampler.sample(x, fixed, threshold=1.0, block_size=4, temperature=0.0, generator=torch.Generator().manual_seed(0))
    assert sampler.stats.steps == int((~fixed[0]).sum())  # a random model is never sure: one per step


def test_a_text_ends_at_its_first_end_token_and_leaves_the_batch():
    sampler = build_sampler("confidence", MASKED, MODEL)
    special = SPECIAL
    x = torch.tensor([[1, 5, 6, 2, 7, 8, 0, 9] + [3] * 8,
                      [1, 5, 0, 6, 7, 8, 9, 10] + [3] * 8,
                      [1, 5, 6, 7, 8, 9, 10, 11] + [3] * 8])
    fixed = torch.zeros_like(x, dtype=torch.bool)
    fixed[:, 0] = True
    ended = sampler._end_rows(x, fixed, torch.arange(3))
    assert ended.tolist() == [True, True, False]
    assert x[0].tolist() == [1, 5, 6, special.eos] + [special.pad] * 12
    assert x[1].tolist() == [1, 5, special.eos] + [special.pad] * 13  # a padding token ends a text too
    assert x[2, :8].tolist() == [1, 5, 6, 7, 8, 9, 10, 11]
    # A fixed token after the end (an infilling template) keeps the row open.
    y = torch.tensor([[1, 5, 2, 6] + [3] * 11 + [7]])
    fix = torch.zeros_like(y, dtype=torch.bool)
    fix[0, [0, 15]] = True
    assert not sampler._end_rows(y, fix, torch.arange(1)).any()
    # An end with masked positions before it waits for them.
    z = torch.tensor([[1, 5, 3, 2] + [3] * 12])
    assert not sampler._end_rows(z, torch.zeros_like(z, dtype=torch.bool), torch.arange(1)).any()


def test_batches_stop_early_when_every_text_has_ended():
    """A model that always predicts end-of-text: one block is decoded, the rest never computed."""
    class Ender(torch.nn.Module):
        spec = MODEL.spec
        supports_canvas_cache = False

        def forward(self, ids, select=None, time=None, labels=None, **_):
            logits = torch.full((int(select.sum()), SPECIAL.vocab_size), -10.0)
            logits[:, SPECIAL.eos] = 10.0
            return logits

    sampler = build_sampler("confidence", MASKED, Ender())
    x, fixed = canvas(last_fixed=False)
    out = sampler.sample(x, fixed, block_size=4, num_steps=16, generator=torch.Generator().manual_seed(0))
    assert out[:, 1].tolist() == [SPECIAL.eos] * 3 and (out[:, 2:] == SPECIAL.pad).all()
    # The first step ends every text at its first free position: nothing more is computed.
    assert sampler.stats.network_calls == 1


def test_ends_wait_for_the_text_before_them():
    """A confidence rule commits an end-of-text proposal only at the row's first masked position."""
    from dlms.samplers.unmasking import ends_wait_for_the_text

    m, e, p = SPECIAL.mask, SPECIAL.eos, SPECIAL.pad
    x = torch.tensor([[1, 5, m, m, m, m]])
    tokens = torch.tensor([[1, 5, e, 6, p, 7]])
    allowed = ends_wait_for_the_text(x, x == m, tokens, m, (e, p))
    assert allowed.tolist() == [[False, False, True, True, False, True]]
    tokens = torch.tensor([[1, 5, 6, e, p, 7]])
    assert ends_wait_for_the_text(x, x == m, tokens, m, (e, p)).tolist() == [[False, False, True, False, False, True]]


def test_update_rules():
    conf = torch.tensor([[0.95, 0.5, 0.92, 0.1], [0.2, 0.3, 0.1, 0.05]])
    cand = torch.tensor([[True, True, True, False], [True, True, True, True]])
    assert commit_above_threshold(conf, cand, 0.9).tolist() == [[True, False, True, False],
                                                                 [False, True, False, False]]
    assert commit_most_confident(conf, cand, torch.tensor([1, 2])).tolist() == [[True, False, False, False],
                                                                                 [True, True, False, False]]
    # Factor rule, row 0 sorted 0.95, 0.92, 0.5: n=1: 2*0.05=0.1 < 1; n=2: 3*0.08=0.24 < 1; n=3: 4*0.5=2 >= 1.
    assert commit_by_factor(conf, cand, 1.0).tolist()[0] == [True, False, True, False]
    assert commit_by_factor(conf, cand, 0.01).sum(-1).tolist() == [1, 1]  # at least one per row
    assert even_quota(torch.tensor([12, 9, 0]), 5).tolist() == [3, 2, 0]
    logits = torch.tensor([[4.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    proposal = torch.tensor([0, 1])
    probs = logits.softmax(-1)
    torch.testing.assert_close(confidence_scores(logits, proposal, "prob"), probs[[0, 1], [0, 1]])
    margin = confidence_scores(logits, proposal, "margin")
    assert margin[0] > 0.5 and abs(float(margin[1])) < 1e-6
    entropy = confidence_scores(logits, proposal, "entropy")
    assert entropy[0] > entropy[1] and float(entropy[1]) == pytest.approx(1 / 3)  # exp(-ln 3)


@pytest.mark.parametrize("name", MASKED_SAMPLERS)
def test_sampler_signature_declares_block_options(name):
    params = inspect.signature(SAMPLERS.get(name).sample).parameters
    assert "block_size" in params and "block_size" in SAMPLERS.get(name).options
