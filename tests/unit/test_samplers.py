"""Samplers: masked (ancestral, cached, confidence) and autoregressive, guidance, logit filters."""

from __future__ import annotations

import itertools
import math
import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlms.backbones import build_backbone, resolve_model_config
from dlms.config import ModelConfig
from dlms.method_options import AROptions, MaskedOptions
from dlms.errors import ConfigError
from dlms.methods import SpecialTokens, build_method
from dlms.samplers import SAMPLERS, build_sampler
from dlms.schedules import schedule_names
from dlms.samplers.common import filter_logits, sample_categorical
from dlms.samplers.guidance import guided_logits
from dlms.samplers.block_calls import forbid_ends, inside_the_text
from tests.backbone_helpers import NoEnds

SPECIAL = SpecialTokens(pad=0, bos=1, eos=2, mask=3, vocab_size=16)
L = 12
MASKED_SAMPLERS = ["ancestral", "cached", "confidence"]


def tiny(causal: bool, seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    cfg = resolve_model_config(ModelConfig(preset="tiny", **kwargs), seq_len=L, causal=causal)
    return build_backbone(cfg, SPECIAL.vocab_size).eval()


def perturb_modulation(model, seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "modulation" in name:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))


MASKED = build_method(MaskedOptions(), SPECIAL)
AR = build_method(AROptions(), SPECIAL)
BIDIR = tiny(False)
NO_ENDS = NoEnds(BIDIR, SPECIAL)  # for step counts over the whole canvas: no text ends early


def canvas_and_fixed(batch: int = 3):
    """A 3-token prompt prefix in every row, plus scattered fixed tokens in some rows."""
    canvas = torch.full((batch, L), SPECIAL.mask)
    fixed = torch.zeros(batch, L, dtype=torch.bool)
    g = torch.Generator().manual_seed(0)
    canvas[:, :3] = torch.randint(4, 16, (batch, 3), generator=g)
    fixed[:, :3] = True
    canvas[0, 6], canvas[0, 10], canvas[1, 8] = 11, 12, 13
    fixed[0, 6] = fixed[0, 10] = fixed[1, 8] = True
    return canvas, fixed


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def before_end(out: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
    """bool [B, L]: the positions up to each row's first generated end-of-text or padding token
    (the samplers end a text there: what follows becomes padding)."""
    end = ((out == SPECIAL.eos) | (out == SPECIAL.pad)) & ~fixed
    first = torch.where(end.any(-1), end.float().argmax(-1), torch.full((out.shape[0],), out.shape[1]))
    return torch.arange(out.shape[1])[None, :] <= first[:, None]


class CountingModel(nn.Module):
    """Wraps a backbone and counts calls and rows it was asked for."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.spec = inner.spec
        self.calls = 0
        self.rows = 0

    @property
    def null_class(self):
        return self.inner.null_class

    def new_cache(self, *args):
        return self.inner.new_cache(*args)

    def forward(self, ids, **kwargs):
        self.calls += 1
        self.rows += ids.shape[0]
        return self.inner(ids, **kwargs)


# ---------------------------------------------------------------- masked samplers


@pytest.mark.parametrize("name", MASKED_SAMPLERS)
def test_masked_sampler_shape_no_mask_left_fixed_kept(name):
    sampler = build_sampler(name, MASKED, BIDIR)
    canvas, fixed = canvas_and_fixed()
    out = sampler.sample(canvas, fixed, num_steps=6, generator=gen(0))
    assert out.shape == canvas.shape and out.dtype == canvas.dtype
    assert not (out == SPECIAL.mask).any()
    assert torch.equal(out[fixed], canvas[fixed])
    assert ((out >= 0) & (out < SPECIAL.vocab_size)).all()


@pytest.mark.parametrize("name", MASKED_SAMPLERS)
def test_masked_sampler_seeded_reproducible(name):
    sampler = build_sampler(name, MASKED, BIDIR)
    canvas, fixed = canvas_and_fixed()
    a = sampler.sample(canvas, fixed, num_steps=6, generator=gen(1))
    b = sampler.sample(canvas, fixed, num_steps=6, generator=gen(1))
    c = sampler.sample(canvas, fixed, num_steps=6, generator=gen(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("name", MASKED_SAMPLERS)
def test_masked_sampler_ignores_what_free_positions_hold(name):
    sampler = build_sampler(name, MASKED, BIDIR)
    canvas, fixed = canvas_and_fixed()
    garbage = torch.where(fixed, canvas, torch.full_like(canvas, 7))
    a = sampler.sample(canvas, fixed, num_steps=4, generator=gen(3))
    b = sampler.sample(garbage, fixed, num_steps=4, generator=gen(3))
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", MASKED_SAMPLERS)
def test_masked_sampler_without_fixed_positions(name):
    sampler = build_sampler(name, MASKED, BIDIR)
    out = sampler.sample(torch.full((2, L), SPECIAL.mask), None, num_steps=4, generator=gen(0))
    assert out.shape == (2, L) and not (out == SPECIAL.mask).any()


def test_confidence_greedy_does_not_depend_on_the_seed():
    # Temperature 0: argmax proposals and a deterministic order, so the generator plays no part.
    sampler = build_sampler("confidence", MASKED, BIDIR)
    canvas, fixed = canvas_and_fixed()
    a = sampler.sample(canvas, fixed, num_steps=5, temperature=0.0, generator=gen(1))
    b = sampler.sample(canvas, fixed, num_steps=5, temperature=0.0, generator=gen(2))
    assert torch.equal(a, b) and not (a == SPECIAL.mask).any()


@pytest.mark.parametrize("num_steps", [3, 8, 40])
def test_cached_equals_ancestral_for_model_without_time(num_steps):
    """The cached sampler is an exact speed-up when the network does not see t: same seed, same output."""
    canvas, fixed = canvas_and_fixed(4)
    plain_model, cached_model = CountingModel(BIDIR), CountingModel(BIDIR)
    plain = build_sampler("ancestral", MASKED, plain_model).sample(canvas, fixed, num_steps=num_steps, generator=gen(5))
    cached = build_sampler("cached", MASKED, cached_model).sample(canvas, fixed, num_steps=num_steps, generator=gen(5))
    assert torch.equal(plain, cached)
    assert cached_model.rows <= plain_model.rows
    if num_steps == 40:  # many steps reveal nothing in some rows: those rows skip the network
        assert cached_model.rows < plain_model.rows


def test_cached_equals_ancestral_with_top_k_and_guidance():
    model = tiny(False, num_classes=2)
    perturb_modulation(model)
    canvas, fixed = canvas_and_fixed(3)
    kwargs = dict(num_steps=20, top_k=5, labels=torch.tensor([0, 1, 0]), guidance_scale=2.0)
    plain = build_sampler("ancestral", MASKED, model).sample(canvas, fixed, generator=gen(6), **kwargs)
    cached = build_sampler("cached", MASKED, model).sample(canvas, fixed, generator=gen(6), **kwargs)
    assert torch.equal(plain, cached)


def test_ancestral_callback_counts_and_monotone_unmasking():
    sampler = build_sampler("ancestral", MASKED, BIDIR)
    canvas, fixed = canvas_and_fixed()
    states = []
    out = sampler.sample(canvas, fixed, num_steps=7, generator=gen(0),
                         callback=lambda i, n, x: states.append((i, n, x.clone())))
    assert [s[0] for s in states] == list(range(1, 8)) and all(s[1] == 7 for s in states)
    masks = [int((x == SPECIAL.mask).sum()) for _, _, x in states]
    assert masks == sorted(masks, reverse=True) and masks[-1] == 0
    for _, _, x in states:  # a revealed token never changes again (until the text's end)
        revealed = (x != SPECIAL.mask) & before_end(out, fixed)
        assert torch.equal(x[revealed], out[revealed])


@pytest.mark.parametrize("k", [1, 2, 4, 20])
def test_confidence_tokens_per_step(k):
    sampler = build_sampler("confidence", MASKED, NO_ENDS)
    canvas, fixed = canvas_and_fixed()
    free = int((~fixed).sum(-1).max())  # 9
    remaining = []
    out = sampler.sample(canvas, fixed, num_steps=64, tokens_per_step=k, block_size=L, generator=gen(0),
                         callback=lambda i, n, x: remaining.append((x == SPECIAL.mask).sum(-1)))
    assert len(remaining) == math.ceil(free / k)
    before = (~fixed).sum(-1)
    for after in remaining:
        revealed = before - after
        assert (revealed >= 0).all() and (revealed <= k).all()
        assert (revealed == torch.minimum(before, torch.tensor(k))).all()  # exactly k while enough are left
        before = after
    assert not (out == SPECIAL.mask).any()


@pytest.mark.parametrize("name", MASKED_SAMPLERS)
def test_fewer_steps_than_tokens(name):
    sampler = build_sampler(name, MASKED, NO_ENDS)
    canvas, fixed = canvas_and_fixed()
    calls = []
    out = sampler.sample(canvas, fixed, num_steps=2, generator=gen(0), callback=lambda i, n, x: calls.append(i))
    assert calls == [1, 2]
    assert not (out == SPECIAL.mask).any()
    assert torch.equal(out[fixed], canvas[fixed])


def test_confidence_even_share_per_step():
    sampler = build_sampler("confidence", MASKED, NO_ENDS)
    canvas = torch.full((1, L), SPECIAL.mask)
    remaining = []
    sampler.sample(canvas, None, num_steps=5, block_size=L, generator=gen(0),
                   callback=lambda i, n, x: remaining.append(int((x == SPECIAL.mask).sum())))
    # 12 tokens over 5 steps: ceil(12/5)=3, ceil(9/4)=3, ceil(6/3)=2, ceil(4/2)=2, 2.
    assert remaining == [9, 6, 4, 2, 0]


def test_confidence_greedy_keeps_the_most_confident():
    """With temperature 0 and one token per step, the first revealed position is the argmax of
    the max-probability over the masked positions."""
    sampler = build_sampler("confidence", MASKED, BIDIR)
    canvas, fixed = (a[:1] for a in canvas_and_fixed(2))
    with torch.no_grad():
        masked = ~fixed
        logits = BIDIR(canvas, select=masked).float()
    logits[:, SPECIAL.mask] = float("-inf")
    # The canvas holds fixed words after free positions: no end may be written before them.
    inside = inside_the_text(canvas, fixed, (SPECIAL.eos, SPECIAL.pad))[masked]
    logits = forbid_ends(logits, inside, (SPECIAL.eos, SPECIAL.pad, SPECIAL.bos))
    best = logits.log_softmax(-1).max(-1)
    positions = masked[0].nonzero()[:, 0]
    states = []
    sampler.sample(canvas, fixed, temperature=0.0, tokens_per_step=1, generator=gen(0),
                   callback=lambda i, n, x: states.append(x.clone()))
    first = (states[0] != canvas) & masked
    assert first.sum() == 1
    pos = int(first[0].nonzero()[0, 0])
    assert pos == int(positions[best.values.argmax()])
    assert int(states[0][0, pos]) == int(best.indices[best.values.argmax()])


TOY = torch.tensor(list(itertools.product(range(4, 8), repeat=3)))  # all 64 sequences of 3 real tokens


class ToyOracle(nn.Module):
    """The exact p(x0_l | unmasked tokens of x_t) under a table over the 64 sequences of length 3."""

    def __init__(self, probs):
        super().__init__()
        self.spec = types.SimpleNamespace(time_conditioning=False, num_classes=0)
        self.null_class = 0
        states = torch.tensor(list(itertools.product((SPECIAL.mask, 4, 5, 6, 7), repeat=3)))
        consistent = ((states[:, None] == SPECIAL.mask) | (states[:, None] == TOY[None])).all(-1)
        cond = torch.einsum("bs,slv->blv", consistent.double() * probs,
                            F.one_hot(TOY, SPECIAL.vocab_size).double())
        self.table = (cond / cond.sum(-1, keepdim=True)).log().float()  # [125, 3, V]

    def forward(self, xt, select=None, time=None, labels=None):
        digit = torch.where(xt == SPECIAL.mask, 0, xt - SPECIAL.mask)
        logits = self.table[(digit * torch.tensor([25, 5, 1])).sum(-1)]
        return logits if select is None else logits[select]


@pytest.mark.parametrize("name", ["ancestral", "cached"])
def test_ancestral_with_exact_denoiser_samples_the_data_distribution(name):
    """With the exact denoiser, ancestral sampling is exact as the steps grow (at most one token
    revealed per step); one step samples the product of the marginals instead."""
    g = torch.Generator().manual_seed(0)
    probs = torch._standard_gamma(torch.ones(64, dtype=torch.float64), generator=g)
    probs = probs / probs.sum()
    sampler = build_sampler(name, MASKED, ToyOracle(probs))
    n = 4000

    def tv(num_steps):
        out = sampler.sample(torch.full((n, 3), SPECIAL.mask), None, num_steps=num_steps, generator=gen(1))
        assert ((out >= 4) & (out < 8)).all()
        cell = ((out - 4) * torch.tensor([16, 4, 1])).sum(-1)
        freq = torch.bincount(cell, minlength=64).double() / n
        return 0.5 * (freq - probs).abs().sum().item()

    one, many = tv(1), tv(25)
    # Sampling noise alone gives a TV of about 0.045 at n=4000; one step is biased by about 0.33.
    assert one > 0.25
    assert many < 0.11


@pytest.mark.parametrize("name", ["ancestral", "cached"])
@pytest.mark.parametrize("schedule", schedule_names("masking"))
def test_ancestral_masked_fraction_follows_the_schedule(name, schedule):
    """The reverse process at time s has the forward marginal: a fraction 1 - alpha(s) still masked."""
    method = build_method(MaskedOptions(schedule=schedule), SPECIAL)
    probs = torch.full((64,), 1 / 64, dtype=torch.float64)
    sampler = build_sampler(name, method, ToyOracle(probs))
    fractions = []
    sampler.sample(torch.full((2000, 3), SPECIAL.mask), None, num_steps=8, generator=gen(0),
                   callback=lambda i, n, x: fractions.append((x == SPECIAL.mask).double().mean().item()))
    times = torch.linspace(1.0, 0.0, 9)
    expected = method.schedule.mask_prob(times[1:]).tolist()
    assert expected[-1] == pytest.approx(0.0, abs=1e-3) and fractions[-1] == 0.0
    # 6000 tokens: the standard error is at most 0.0065.
    assert fractions == pytest.approx(expected, abs=0.03)


# ---------------------------------------------------------------- guidance


def test_guided_logits_scales():
    model = tiny(False, num_classes=3)
    perturb_modulation(model)
    x = torch.randint(4, 16, (2, L), generator=gen(0))
    labels = torch.tensor([0, 2])
    calls = []

    def forward(lab):
        calls.append(None if lab is None else lab.shape[0])
        reps = 1 if lab is None else lab.shape[0] // x.shape[0]
        return model(x.repeat(reps, 1), labels=lab)

    with torch.no_grad():
        cond = model(x, labels=labels)
        uncond = model(x, labels=torch.full((2,), model.null_class))
        assert (cond - uncond).abs().max() > 1e-4
        torch.testing.assert_close(guided_logits(forward, labels, model.null_class, 1.0), cond)
        assert calls[-1] == 2  # scale 1: one plain call
        torch.testing.assert_close(guided_logits(forward, labels, model.null_class, 0.0), uncond, rtol=1e-5, atol=1e-5)
        assert calls[-1] == 4  # guidance: one batched call of 2B
        torch.testing.assert_close(guided_logits(forward, labels, model.null_class, 3.0),
                                   uncond + 3.0 * (cond - uncond), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(guided_logits(forward, None, model.null_class, 3.0), model(x))


def test_masked_sampler_with_labels_changes_output():
    model = tiny(False, num_classes=2)
    perturb_modulation(model, seed=4)  # strong enough that the labels differ where ends are ruled out
    sampler = build_sampler("ancestral", MASKED, model)
    canvas = torch.full((4, L), SPECIAL.mask)
    canvas[:, -1] = 5  # a fixed last token: no text ends before it, so whole rows are compared
    fixed = canvas != SPECIAL.mask
    a = sampler.sample(canvas, fixed, labels=torch.zeros(4, dtype=torch.long), guidance_scale=3.0,
                       num_steps=6, temperature=0.0, generator=gen(0))
    b = sampler.sample(canvas, fixed, labels=torch.ones(4, dtype=torch.long), guidance_scale=3.0,
                       num_steps=6, temperature=0.0, generator=gen(0))
    assert not (a == SPECIAL.mask).any() and not torch.equal(a, b)


# ---------------------------------------------------------------- autoregressive sampler

CAUSAL = tiny(True)


def ar_prompt(batch: int = 3, prefix: int = 3):
    canvas = torch.full((batch, L), SPECIAL.pad)
    canvas[:, 0] = SPECIAL.bos
    canvas[:, 1:prefix] = torch.randint(4, 16, (batch, prefix - 1), generator=gen(1))
    fixed = torch.zeros(batch, L, dtype=torch.bool)
    fixed[:, :prefix] = True
    return canvas, fixed


def manual_greedy(model, canvas, prefix):
    """Argmax decoding with a full forward (no cache) on the whole sequence so far."""
    x = canvas[:, :prefix].clone()
    with torch.no_grad():
        for _ in range(prefix, canvas.shape[1]):
            logits = model(x)[:, -1].float()
            logits[:, SPECIAL.mask] = float("-inf")
            logits[:, SPECIAL.pad] = float("-inf")
            x = torch.cat([x, logits.argmax(-1, keepdim=True)], dim=1)
    return x


def test_ar_greedy_equals_manual_argmax_without_cache():
    model = tiny(True)
    with torch.no_grad():  # make end-of-text unlikely so every row decodes to the end
        model.embed.weight[SPECIAL.eos] = 0
    canvas, fixed = ar_prompt()
    out = build_sampler("ar", AR, model).sample(canvas, fixed, temperature=0.0)
    expected = manual_greedy(model, canvas, 3)
    assert not (expected == SPECIAL.eos).any()
    assert torch.equal(out, expected)


def test_ar_top_k_one_equals_greedy_and_seeds_matter():
    sampler = build_sampler("ar", AR, CAUSAL)
    canvas, fixed = ar_prompt()
    greedy = sampler.sample(canvas, fixed, temperature=0.0)
    assert torch.equal(sampler.sample(canvas, fixed, temperature=1.0, top_k=1, generator=gen(3)), greedy)
    a = sampler.sample(canvas, fixed, temperature=1.0, generator=gen(4))
    b = sampler.sample(canvas, fixed, temperature=1.0, generator=gen(4))
    c = sampler.sample(canvas, fixed, temperature=1.0, generator=gen(5))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a[:, :3], canvas[:, :3])
    assert not (a == SPECIAL.mask).any()


class EosWhen(nn.Module):
    """A causal backbone whose next-token logits force end-of-text for chosen rows once a row has
    `at` tokens, and forbid it otherwise."""

    def __init__(self, inner, rows, at):
        super().__init__()
        self.inner, self.rows, self.at = inner, rows, at
        self.spec = inner.spec
        self.steps = 0

    @property
    def null_class(self):
        return self.inner.null_class

    def new_cache(self, *args):
        return self.inner.new_cache(*args)

    def forward(self, ids, labels=None, cache=None):
        self.steps += 1
        logits = self.inner(ids, labels=labels, cache=cache).clone()
        length = cache.length  # tokens seen so far, including these
        logits[:, -1, SPECIAL.eos] = -100.0
        if length >= self.at:
            logits[self.rows, -1, SPECIAL.eos] = 100.0
        return logits


def test_ar_rows_stop_after_eos():
    model = EosWhen(CAUSAL, rows=[0, 2], at=6)
    canvas, fixed = ar_prompt()
    out = build_sampler("ar", AR, model).sample(canvas, fixed, temperature=1.0, generator=gen(0))
    for row in (0, 2):
        assert out[row, 6] == SPECIAL.eos
        assert (out[row, 7:] == SPECIAL.pad).all()
        assert not (out[row, 3:6] == SPECIAL.pad).any()
    assert not (out[1] == SPECIAL.eos).any() and not (out[1, 3:] == SPECIAL.pad).any()


def test_ar_stops_early_when_every_row_is_done():
    model = EosWhen(CAUSAL, rows=[0, 1, 2], at=5)
    canvas, fixed = ar_prompt()
    steps = []
    out = build_sampler("ar", AR, model).sample(canvas, fixed, temperature=1.0, generator=gen(0),
                                               callback=lambda i, n, x: steps.append(i))
    assert (out[:, 5] == SPECIAL.eos).all() and (out[:, 6:] == SPECIAL.pad).all()
    assert steps == [1, 2, 3] and model.steps == 3


def test_ar_sampler_needs_a_prefix():
    sampler = build_sampler("ar", AR, CAUSAL)
    canvas, fixed = ar_prompt()
    with pytest.raises(ValueError, match="prefix"):
        sampler.sample(canvas, None)
    gap = fixed.clone()
    gap[0, 5] = True
    with pytest.raises(ValueError, match="prefix"):
        sampler.sample(canvas, gap)


# ---------------------------------------------------------------- common helpers


def test_filter_logits_top_p_keeps_smallest_set_reaching_p():
    probs = torch.tensor([0.15, 0.5, 0.05, 0.3])  # sorted: 0.5 (1), 0.3 (3), 0.15 (0), 0.05 (2)
    logits = probs.log()[None].repeat(2, 1)
    kept = lambda out: torch.isfinite(out[0]).nonzero()[:, 0].tolist()  # noqa: E731
    assert kept(filter_logits(logits, top_p=0.4)) == [1]
    assert kept(filter_logits(logits, top_p=0.75)) == [1, 3]
    assert kept(filter_logits(logits, top_p=0.9)) == [0, 1, 3]
    assert kept(filter_logits(logits, top_p=0.99)) == [0, 1, 2, 3]
    assert kept(filter_logits(logits, top_p=1.0)) == [0, 1, 2, 3]
    assert kept(filter_logits(logits, top_k=2)) == [1, 3]
    assert kept(filter_logits(logits, top_k=3, top_p=0.75)) == [1, 3]
    assert kept(filter_logits(logits, top_k=1, top_p=0.99)) == [1]
    out = filter_logits(logits, top_p=0.75)
    torch.testing.assert_close(out[0, [1, 3]], logits[0, [1, 3]])  # kept values unchanged
    # Rows are filtered independently.
    two = torch.stack([probs.log(), torch.tensor([0.97, 0.01, 0.01, 0.01]).log()])
    res = filter_logits(two, top_p=0.75)
    assert torch.isfinite(res[0]).sum() == 2 and torch.isfinite(res[1]).tolist() == [True, False, False, False]


def test_sample_categorical_frequencies():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05, 0.0])
    logits = probs.log()[None].expand(20000, -1)
    draws = sample_categorical(logits, 1.0, gen(0))
    freq = torch.bincount(draws, minlength=5).double() / 20000
    # 20k draws: the standard error is at most 0.0036.
    torch.testing.assert_close(freq, probs.double(), rtol=0, atol=0.015)
    assert freq[4] == 0  # zero probability is never drawn
    # Temperature 0.5 squares the probabilities (then renormalises).
    sharp = probs**2 / (probs**2).sum()
    freq = torch.bincount(sample_categorical(logits, 0.5, gen(1)), minlength=5).double() / 20000
    torch.testing.assert_close(freq, sharp.double(), rtol=0, atol=0.015)
    # Temperature 0 is argmax; the generator makes draws reproducible.
    assert (sample_categorical(logits, 0.0) == 0).all()
    assert torch.equal(sample_categorical(logits[:50], 1.0, gen(7)), sample_categorical(logits[:50], 1.0, gen(7)))


def test_sample_categorical_rare_token_rate():
    # A token with probability 1e-3: 200k draws expect 200 (sd 14).
    probs = torch.tensor([1 - 1e-3, 1e-3])
    draws = sample_categorical(probs.log()[None].expand(200000, -1), 1.0, gen(2))
    assert abs(int(draws.sum()) - 200) < 60


def test_build_sampler_checks_method():
    assert set(MASKED_SAMPLERS + ["ar"]) <= set(SAMPLERS.names())
    with pytest.raises(ConfigError) as info:
        build_sampler("ar", MASKED, BIDIR)
    assert "ancestral" in str(info.value)
    for name in MASKED_SAMPLERS:
        with pytest.raises(ConfigError, match="'ar'"):
            build_sampler(name, AR, CAUSAL)
    with pytest.raises(ConfigError, match="unknown sampler"):
        build_sampler("beam", MASKED, BIDIR)
    assert build_sampler("auto", MASKED, BIDIR).name == "confidence"
    assert build_sampler("auto", AR, CAUSAL).name == "ar"


@pytest.mark.parametrize("name", MASKED_SAMPLERS)
def test_prompt_guidance_contrasts_the_prompt_with_the_prompt_masked(name):
    """Without labels, guidance runs the network on x_t and on x_t with the prompt masked (one
    batch of 2B), keeps the other fixed tokens, and changes the samples; scale 1 is unguided."""
    canvas, fixed = canvas_and_fixed()
    prompt = fixed.clone()
    prompt[:, 0] = False  # a start token stays visible to the unconditional branch
    seen = []
    model = BIDIR

    class Recorder(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner, self.spec, self.null_class = model, model.spec, getattr(model, "null_class", None)

        def forward(self, x, **kwargs):
            seen.append(x.clone())
            return self.inner(x, **kwargs)

    sampler = build_sampler(name, MASKED, Recorder())
    guided = sampler.sample(canvas, fixed, num_steps=4, guidance_scale=3.0, prompt=prompt, generator=gen(7))
    first = seen[0]
    assert first.shape[0] == 2 * canvas.shape[0]
    cond, uncond = first.chunk(2)
    assert (uncond[prompt] == SPECIAL.mask).all() and (cond[prompt] == canvas[prompt]).all()
    assert (uncond[fixed & ~prompt] == canvas[fixed & ~prompt]).all()
    seen.clear()
    plain = sampler.sample(canvas, fixed, num_steps=4, guidance_scale=1.0, prompt=prompt, generator=gen(7))
    assert seen[0].shape[0] == canvas.shape[0]  # no second branch at scale 1
    assert (guided[fixed] == canvas[fixed]).all() and not torch.equal(guided, plain)


def test_ar_prompt_guidance_mixes_the_prompt_and_the_prompt_masked():
    """ar without labels: guidance runs the prompt and the prompt as mask tokens in one batch of 2B
    and one cache. Scale 0 is the unconditional branch alone (greedy: the same tokens as decoding
    the masked prompt), scale 1 plain decoding, and a scale in between moves the samples."""
    model = tiny(True)
    with torch.no_grad():  # every row decodes to the end
        model.embed.weight[SPECIAL.eos] = 0
    canvas, fixed = ar_prompt(prefix=4)
    prompt = fixed.clone()
    prompt[:, 0] = False  # the start token stays
    sampler = build_sampler("ar", AR, model)
    masked_prompt = canvas.masked_fill(prompt, SPECIAL.mask)
    uncond = sampler.sample(masked_prompt, fixed, temperature=0.0)
    at_zero = sampler.sample(canvas, fixed, temperature=0.0, guidance_scale=0.0, prompt=prompt)
    assert torch.equal(at_zero[:, 4:], uncond[:, 4:]) and torch.equal(at_zero[:, :4], canvas[:, :4])
    plain = sampler.sample(canvas, fixed, temperature=0.0)
    assert torch.equal(sampler.sample(canvas, fixed, temperature=0.0, guidance_scale=1.0, prompt=prompt), plain)
    assert not torch.equal(uncond[:, 4:], plain[:, 4:])  # the prompt matters to this model
    drawn = sampler.sample(canvas, fixed, temperature=1.0, guidance_scale=1.0, prompt=prompt, generator=gen(0))
    strong = sampler.sample(canvas, fixed, temperature=1.0, guidance_scale=3.0, prompt=prompt, generator=gen(0))
    assert not torch.equal(strong, drawn) and torch.equal(strong[:, :4], canvas[:, :4])
