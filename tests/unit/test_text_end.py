"""Where a text ends under the confidence rules (`text_end`): "drawn" decides it at each block's
first call from the model's end-of-text probabilities, before any word of the block, so a rule
that commits sure words first cannot push the end back; "frontier" leaves it to the rule.

The fake model below is what made texts run long on TinyStories: every masked position is 70%
sure of one word and 30% of an end-of-text, so the end is never the surest choice."""
from __future__ import annotations

import pytest
import torch

from dlms.methods import SpecialTokens, build_method
from dlms.method_options import MaskedOptions
from dlms.samplers import SAMPLERS, build_sampler
from dlms.samplers.unmasking import draw_text_end, first_end_probs

SPECIAL = SpecialTokens(pad=0, bos=1, eos=2, mask=3, vocab_size=16)
MASKED = build_method(MaskedOptions(), SPECIAL)
ORDERED = [n for n in SAMPLERS.names() if "text_end" in SAMPLERS.get(n).options]
WORD = 9


class UnsureOfTheEnd(torch.nn.Module):
    """p(word 9) = 0.7 and p(end-of-text) = `p_end` at every position asked; no canvas cache."""

    supports_canvas_cache = False

    def __init__(self, p_end: float = 0.3):
        super().__init__()
        from types import SimpleNamespace

        self.spec = SimpleNamespace(time_conditioning=False)
        self.p_end = p_end
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, ids, select=None, time=None, labels=None, attn_mask=None):
        probs = torch.full((int(select.sum()), SPECIAL.vocab_size), 1e-9)
        probs[:, WORD] = 1.0 - self.p_end
        probs[:, SPECIAL.eos] = self.p_end
        return probs.log()


def sample(name: str, text_end: str, rows: int = 400, length: int = 12, block: int = 8, p_end: float = 0.3,
           seed: int = 0):
    sampler = build_sampler(name, MASKED, UnsureOfTheEnd(p_end))
    x = torch.full((rows, length), SPECIAL.mask)
    x[:, 0] = SPECIAL.bos
    fixed = x != SPECIAL.mask
    options = {"tokens_per_step": 1} if name == "confidence" else {}
    out = sampler.sample(x, fixed, block_size=block, text_end=text_end, generator=torch.Generator().manual_seed(seed),
                         **options)
    return out, sampler


def text_lengths(out: torch.Tensor) -> torch.Tensor:
    """Words before each row's end-of-text (the canvas length past the start token without one)."""
    is_end = out == SPECIAL.eos
    first = torch.where(is_end.any(-1), is_end.float().argmax(-1), torch.full((out.shape[0],), out.shape[1]))
    return first - 1


@pytest.mark.parametrize("name", ORDERED)
def test_a_drawn_end_falls_where_the_model_puts_it(name):
    out, _ = sample(name, "drawn")
    lengths = text_lengths(out)
    # The first free position ends the text with the model's 0.3; the drawn end never moves later
    # because sure words were committed first.
    assert abs(float((lengths == 0).float().mean()) - 0.3) < 0.07
    # Marginals of 0.3 at every position: the end falls in the first four positions of the block.
    assert int(lengths.max()) <= 3
    # Every text is words up to its end, then padding: nothing after an end is a word.
    for row, n in zip(out, lengths.tolist()):
        assert row[1:1 + n].eq(WORD).all() and row[1 + n] == SPECIAL.eos and row[2 + n:].eq(SPECIAL.pad).all()


@pytest.mark.parametrize("name", ORDERED)
def test_an_end_left_to_the_rule_comes_late(name):
    """The failure "drawn" fixes: at the first masked position the end (0.3) is never the surest
    choice (a word, 0.7, elsewhere) until the words after it are written, so texts run long
    (drawn: 1.2 words on average)."""
    out, _ = sample(name, "frontier", rows=40)
    assert float(text_lengths(out).float().mean()) > 4


@pytest.mark.parametrize("name", ORDERED)
def test_a_model_sure_of_no_end_writes_the_whole_canvas_and_a_sure_end_stops_at_once(name):
    out, _ = sample(name, "drawn", rows=8, p_end=1e-6)
    assert out[:, 1:].eq(WORD).all()
    out, sampler = sample(name, "drawn", rows=8, p_end=0.999)
    assert text_lengths(out).eq(0).all() and sampler.stats.network_calls == 1


@pytest.mark.parametrize("name", ORDERED)
def test_drawn_ends_are_seeded(name):
    a, _ = sample(name, "drawn", rows=16, seed=3)
    b, _ = sample(name, "drawn", rows=16, seed=3)
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", ORDERED)
def test_no_end_is_drawn_before_a_given_word(name):
    """An infilling template's given word after the blanks: the text goes on past them."""
    sampler = build_sampler(name, MASKED, UnsureOfTheEnd(0.5))
    x = torch.full((32, 10), SPECIAL.mask)
    x[:, 0], x[:, 6] = SPECIAL.bos, 7
    fixed = x != SPECIAL.mask
    options = {"tokens_per_step": 1} if name == "confidence" else {}
    out = sampler.sample(x, fixed, block_size=8, text_end="drawn", generator=torch.Generator().manual_seed(0),
                         **options)
    assert out[:, 1:6].eq(WORD).all() and out[:, 6].eq(7).all()


def test_first_end_probs_counts_an_end_once():
    once = torch.tensor([[0.1, 0.2, 0.3]])
    torch.testing.assert_close(first_end_probs(once, cumulative=False), once)
    # Padding that is the end-of-text token: 0.1 ended by the first position, 0.4 by the second...
    climbing = torch.tensor([[0.1, 0.4, 0.3, 0.9]])
    torch.testing.assert_close(first_end_probs(climbing, cumulative=True), torch.tensor([[0.1, 0.3, 0.0, 0.5]]))


def test_padding_after_a_position_says_the_text_has_ended_by_then():
    """A padded model unsure where its end falls: 0.1 of an end-of-text at each position, but
    padding after them that says the text ended by the second position with 0.6."""
    end = torch.tensor([[0.1, 0.1, 0.1, 0.1]])
    pad = torch.tensor([[0.0, 0.2, 0.6, 0.7]])
    torch.testing.assert_close(first_end_probs(end, cumulative=False, pad_probs=pad),
                               torch.tensor([[0.2, 0.4, 0.1, 0.0]]))
    # No padding mass (a packed model): the end-of-text probabilities as they are.
    torch.testing.assert_close(first_end_probs(end, cumulative=False, pad_probs=torch.zeros_like(end)), end)


@pytest.mark.parametrize("layout, data_format, confidence, expected", [
    ("packed", "text", "prob", "drawn"), ("padded", "text", "prob", "frontier"), ("padded", "text", "entropy", "drawn"),
    ("padded", "text", "margin", "drawn"), ("packed", "text", "entropy", "drawn"),
    ("padded", "prompt_response", "prob", "drawn"), ("padded", "prompt_response", "entropy", "drawn")])
def test_auto_leaves_the_end_to_the_frontier_for_padded_text_ranked_by_probability(layout, data_format, confidence,
                                                                                   expected):
    from types import SimpleNamespace

    from dlms.model import DiffusionLM
    from dlms.samplers.options import SAMPLER_OPTIONS

    run = SimpleNamespace(cfg=SimpleNamespace(data=SimpleNamespace(layout=layout, format=data_format)))
    assert DiffusionLM.auto_text_end(run, confidence) == expected
    assert SAMPLER_OPTIONS["text_end"].choices == ("auto", "drawn", "frontier")


def test_draw_text_end_follows_the_probabilities():
    probs = torch.tensor([[0.2, 0.3, 0.0]]).expand(20000, 3)
    drawn = draw_text_end(probs, torch.Generator().manual_seed(0))
    shares = torch.bincount(drawn, minlength=4).float() / drawn.numel()
    torch.testing.assert_close(shares, torch.tensor([0.2, 0.3, 0.0, 0.5]), atol=0.015, rtol=0)
    # A model sure of an end at every position: the first one.
    assert draw_text_end(torch.ones(5, 4), torch.Generator().manual_seed(0)).eq(0).all()
    assert draw_text_end(torch.zeros(5, 4), torch.Generator().manual_seed(0)).eq(4).all()


def test_a_row_kept_open_after_its_drawn_end_is_decoded_to_the_end():
    """An end drawn before a given word (possible only if no rule keeps ends out of a template):
    the row does not end there, and its positions after the end are still decoded, never left
    masked (nor the loop left waiting for them)."""
    import dlms.samplers.masked as masked

    sampler = build_sampler("confidence", MASKED, UnsureOfTheEnd(0.9))
    x = torch.full((4, 10), SPECIAL.mask)
    x[:, 0], x[:, 8] = SPECIAL.bos, 7
    fixed = x != SPECIAL.mask
    original = masked.inside_the_text
    masked.inside_the_text = lambda tokens, fixed, end_ids: torch.zeros_like(fixed)
    try:
        out = sampler.sample(x, fixed, block_size=10, tokens_per_step=1, text_end="drawn",
                             generator=torch.Generator().manual_seed(0))
    finally:
        masked.inside_the_text = original
    assert not (out == SPECIAL.mask).any() and out[:, 8].eq(7).all()
    assert (out[:, 1:8] == SPECIAL.eos).any()  # the drawn end is there: nothing kept it out


class KnownLength(torch.nn.Module):
    """A text of length n (words after the start token) with P(n) = 0.08 for n = 0..11, read
    consistently: at a free position j the end-of-text has the probability that the text ends at
    j given it went on past every position already written with a word; the rest is a word."""

    supports_canvas_cache = False

    def __init__(self):
        super().__init__()
        from types import SimpleNamespace

        self.spec = SimpleNamespace(time_conditioning=False)
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, ids, select=None, time=None, labels=None, attn_mask=None):
        written = (ids[:, 1:] == WORD).cumprod(-1).sum(-1)  # [B] words written before the first free position
        going_on = 1.0 - 0.08 * written.float()  # P(the text went on past them)
        p_end = (0.08 / going_on)[:, None].expand(ids.shape).clamp(max=1.0)[select]
        probs = torch.full((p_end.shape[0], SPECIAL.vocab_size), 1e-9)
        probs[:, SPECIAL.eos] = p_end
        probs[:, WORD] = 1.0 - p_end
        return probs.log()


@pytest.mark.parametrize("name", ORDERED)
def test_greedy_decoding_ends_at_the_median_length_across_blocks(name):
    """P(ended by n words) = 0.08 (n + 1) first reaches one half at n = 6. Greedy decoding ends
    there although the first two blocks (of 4) each give an end less than one half: the chance of
    going on past the first block is carried into the second. (Afresh in each block the end
    came at 9 words; read from the likeliest token at each position, a word, never.)"""
    sampler = build_sampler(name, MASKED, KnownLength())
    x = torch.full((3, 13), SPECIAL.mask)
    x[:, 0] = SPECIAL.bos
    options = {"tokens_per_step": 1} if name == "confidence" else {}
    out = sampler.sample(x, x != SPECIAL.mask, block_size=4, text_end="drawn", temperature=0.0,
                         generator=torch.Generator().manual_seed(0), **options)
    assert text_lengths(out).tolist() == [6, 6, 6]
