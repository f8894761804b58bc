"""Infilling: template parsing, the canvas, and filling on tiny random models with every
registered masked and gaussian sampler: the given tokens never move, every blank holds text
(never an end-of-text, padding or start token), ordinary sampling is unchanged by that rule,
and models that cannot read both sides of a blank are refused."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import dlms.samplers.gaussian as gaussian_samplers
import dlms.samplers.masked as masked_samplers
from dlms.assembly import build_parts, resolve_run_config, special_tokens
from dlms.config import load_config
from dlms.data.tokenizer import train_bpe_tokenizer
from dlms.errors import ArgumentError, DlmsError
from dlms.infill import (DEFAULT_BLANK_TOKENS, class_log_likelihoods, draw_classes, infill_canvas, parse_template,
                         template_ids)
from dlms.methods import build_method
from dlms.model import DiffusionLM
from dlms.samplers import SAMPLERS
from tests.conftest import tiny_overrides

TEXTS = ["the chef cooked the soup , and it was really good .", "the waiter served the steak , and it was awful .",
         "a cat sat on the mat .", "we loved the soup at the cafe ."] * 20
TOKENIZER = train_bpe_tokenizer(TEXTS, 300)
SEQ_LEN = 24
TEMPLATE = "the chef ___ the soup , and it was ___:2 ."
SAMPLERS_OF = {family: [n for n in SAMPLERS.names() if family in SAMPLERS.get(n).method_names]
               for family in ("masked", "gaussian")}
CASES = [(family, name) for family, names in SAMPLERS_OF.items() for name in names]


def tiny_lm(method: str = "masked", layout: str = "padded", loves_ends: bool = False,
            labels: list[str] | None = None, **extra) -> DiffusionLM:
    """A randomly initialised `tiny` model on TOKENIZER. `loves_ends`: its logits favour the
    end-of-text, padding and start tokens by 30 nats, so an unrestricted sampler writes them.
    `labels`: class names of a `topic` label column the model is conditioned on."""
    names = {"topic": labels} if labels else {}
    cfg = load_config(None, tiny_overrides(Path("unused"), method, **{"data.seq_len": SEQ_LEN, "data.layout": layout,
                                                                      **({"data.label_column": "topic"} if labels
                                                                         else {}), **extra}))
    cfg = resolve_run_config(cfg, build_method(cfg.method, special_tokens(TOKENIZER)), names)
    torch.manual_seed(0)
    method_obj, model = build_parts(cfg, TOKENIZER)
    if labels:  # adaLN starts at zero, which would make every class predict alike
        for name, param in model.named_parameters():
            if "modulation" in name or "class_embed" in name:
                torch.nn.init.normal_(param, std=1.0)
    if loves_ends:
        special = method_obj.special
        bonus = torch.zeros(special.vocab_size)
        bonus[[special.eos, special.pad, special.bos]] = 30.0
        project = model.logits
        model.logits = lambda hidden: project(hidden) + bonus
    return DiffusionLM(cfg, method_obj, model, TOKENIZER, names, torch.device("cpu"), "fp32")


def steps_for(sampler: str) -> dict:
    return {"steps": 6} if "num_steps" in SAMPLERS.get(sampler).options else {}


def expected(lm: DiffusionLM, template: str, blank_tokens: int | None = None):
    """(canvas [1, W], fixed [1, W], blanks [1, W]) as the model builds them."""
    s = lm.method.special
    ids, given = template_ids(parse_template(template, blank_tokens),
                              lambda t: TOKENIZER.encode(t, add_special_tokens=False), s.mask)
    canvas, fixed, _ = infill_canvas(lm._start_tokens, ids, given, SEQ_LEN, eos=s.eos, pad=s.pad, mask_id=s.mask,
                                     padded=lm.cfg.data.layout == "padded", num_samples=1, device=torch.device("cpu"))
    blanks = torch.zeros_like(fixed)
    blanks[:, : len(lm._start_tokens) + len(ids)] = True
    return canvas, fixed, blanks & ~fixed


def specials(lm: DiffusionLM) -> torch.Tensor:
    s = lm.method.special
    return torch.tensor([s.pad, s.bos, s.eos, s.mask])


# ---------------------------------------------------------------- parsing


def test_parse_blanks_and_their_lengths():
    assert parse_template("the chef ___ the soup") == ["the chef", DEFAULT_BLANK_TOKENS, " the soup"]
    assert parse_template("the chef ___:3 the soup") == ["the chef", 3, " the soup"]
    assert parse_template("  ___ chef ___:2 ___ soup ___", blank_tokens=2) == [2, " chef", 2, 2, " soup", 2]
    assert parse_template("it was ___:2.") == ["it was", 2, "."]
    assert parse_template("it was _____ .") == ["it was", 1, " ."]  # any run of 3+ underscores
    assert parse_template("a snake_case word ___") == ["a snake_case word", 1]


@pytest.mark.parametrize("text", ["the chef cooked", "", "a __ b", "   "])
def test_a_template_without_a_blank_is_an_error(text):
    with pytest.raises(ArgumentError, match="needs at least one blank"):
        parse_template(text)


@pytest.mark.parametrize("text", ["the ___:0 soup", "the ___:x soup", "the ___: soup", "the ___:-1 soup",
                                  "the ___:2x soup", "the soup ___:"])
def test_a_bad_blank_length_is_an_error(text):
    with pytest.raises(ArgumentError, match="after `___:` comes a number of tokens, at least 1"):
        parse_template(text)


def test_bad_arguments_are_errors():
    with pytest.raises(ArgumentError, match="blank_tokens must be an integer of at least 1"):
        parse_template("the ___ soup", blank_tokens=0)
    with pytest.raises(ArgumentError, match="text must be a string"):
        parse_template(None)  # type: ignore[arg-type]
    with pytest.raises(ArgumentError, match="special token"):
        template_ids(parse_template("the <eos> ___"), lambda t: TOKENIZER.encode(t, add_special_tokens=False), 3,
                     (0, 1, 2, 3))


def test_given_words_keep_the_tokens_of_the_whole_text():
    """Segment by segment, the space before a blank going with the blank: the given words get
    exactly the tokens they have in the whole sentence, the blank the word's own tokens."""
    whole = TOKENIZER.encode("the chef cooked the soup , and it was really good .", add_special_tokens=False)
    word = TOKENIZER.encode(" cooked", add_special_tokens=False)
    ids, given = template_ids(parse_template(f"the chef ___:{len(word)} the soup , and it was really good ."),
                              lambda t: TOKENIZER.encode(t, add_special_tokens=False), mask_id=3)
    head = len(TOKENIZER.encode("the chef", add_special_tokens=False))
    assert len(ids) == len(whole)
    assert ids[:head] + word + ids[head + len(word):] == whole
    assert given == [True] * head + [False] * len(word) + [True] * (len(whole) - head - len(word))


def test_the_canvas_ends_after_the_template():
    ids, given = [10, 3, 3, 11], [True, False, False, True]
    canvas, fixed, marked = infill_canvas([1], ids, given, 8, eos=2, pad=0, mask_id=3, padded=True, num_samples=2,
                                          device=torch.device("cpu"))
    assert canvas.shape == fixed.shape == marked.shape == (2, 8)
    assert canvas[0].tolist() == [1, 10, 3, 3, 11, 2, 0, 0]
    assert fixed[0].tolist() == [True, True, False, False, True, True, True, True]
    assert marked[0].tolist() == [False, True, False, False, True, False, False, False]  # what guidance hides
    packed, fixed, _ = infill_canvas([2], ids, given, 8, eos=2, pad=0, mask_id=3, padded=False, num_samples=1,
                                     device=torch.device("cpu"))
    assert packed[0].tolist() == [2, 10, 3, 3, 11, 2, 3, 3]  # the next document is the model's
    assert fixed[0].tolist() == [True, True, False, False, True, True, False, False]
    exact, fixed, _ = infill_canvas([1], ids, given, 5, eos=2, pad=0, mask_id=3, padded=True, num_samples=1,
                                    device=torch.device("cpu"))
    assert exact[0].tolist() == [1, 10, 3, 3, 11]  # no room for an end: a row cut at its length
    with pytest.raises(ArgumentError, match="the template is 5 tokens with the start token, more than the model's 4"):
        infill_canvas([1], ids, given, 4, eos=2, pad=0, mask_id=3, padded=True, num_samples=1,
                      device=torch.device("cpu"))


def test_inside_the_text_marks_free_positions_before_a_given_word():
    tokens = torch.tensor([[1, 3, 9, 3, 3, 2, 0], [1, 3, 3, 3, 3, 0, 0]])
    fixed = tokens != 3
    inside = masked_samplers.inside_the_text(tokens, fixed, (2, 0))
    assert inside.tolist() == [[False, True, False, False, False, False, False], [False] * 7]


# ---------------------------------------------------------------- filling


@pytest.mark.parametrize("layout", ["padded", "packed"])
@pytest.mark.parametrize("guidance", [None, 2.0])
@pytest.mark.parametrize("family,sampler", CASES)
def test_given_tokens_stay_and_every_blank_holds_text(family, sampler, guidance, layout):
    """On a model that would rather write ends everywhere, every sampler keeps the given tokens
    and writes real tokens in every blank; the text runs to the end of its template."""
    lm = tiny_lm(family, layout, loves_ends=True)
    ids = lm.infill_ids(TEMPLATE, num_samples=3, sampler=sampler, seed=0, guidance=guidance, **steps_for(sampler))
    canvas, fixed, blanks = expected(lm, TEMPLATE)
    assert ids.shape == (3, SEQ_LEN)
    assert torch.equal(ids[fixed.expand_as(ids)], canvas[fixed].repeat(3))
    assert int(blanks.sum()) == 3
    assert not torch.isin(ids[blanks.expand_as(ids)], specials(lm)).any()
    for text in lm.decode(ids):
        head, _, rest = text.partition(" the soup , and it was")
        assert head.startswith("the chef") and rest.endswith(".")


@pytest.mark.parametrize("cache", ["prefix", "dual"])
@pytest.mark.parametrize("sampler", [n for n in SAMPLERS_OF["masked"] if "cache" in SAMPLERS.get(n).options])
def test_blanks_hold_text_with_a_canvas_cache(sampler, cache):
    lm = tiny_lm("masked", loves_ends=True)
    ids = lm.infill_ids(TEMPLATE, num_samples=2, sampler=sampler, cache=cache, block_size=4, seed=1,
                        **steps_for(sampler))
    canvas, fixed, blanks = expected(lm, TEMPLATE)
    assert torch.equal(ids[fixed.expand_as(ids)], canvas[fixed].repeat(2))
    assert not torch.isin(ids[blanks.expand_as(ids)], specials(lm)).any()


def _without_the_rule(monkeypatch):
    """Turn the end rule off in every sampler: no position counts as inside a text."""
    def nowhere(tokens, fixed, end_ids):
        return torch.zeros_like(fixed)

    monkeypatch.setattr(masked_samplers, "inside_the_text", nowhere)
    monkeypatch.setattr(gaussian_samplers, "inside_the_text", nowhere)


@pytest.mark.parametrize("family,sampler", CASES)
def test_the_rule_changes_nothing_when_no_given_word_follows(family, sampler, monkeypatch):
    """A prompt, then free positions, then held padding: seeded outputs are those of the
    unrestricted logits. And the rule is what keeps the blanks free of ends."""
    lm = tiny_lm(family, loves_ends=True)
    plain = tiny_lm(family)
    options = dict(num_samples=3, seed=2, sampler=sampler, **steps_for(sampler))
    ruled = [lm.sample_ids("the chef", length=12, **options), plain.sample_ids("the chef", **options),
             plain.sample_ids(None, guidance=None, **options)]
    infilled = lm.infill_ids(TEMPLATE, **options)
    _without_the_rule(monkeypatch)
    free = [lm.sample_ids("the chef", length=12, **options), plain.sample_ids("the chef", **options),
            plain.sample_ids(None, guidance=None, **options)]
    for a, b in zip(ruled, free):
        assert torch.equal(a, b)
    _, _, blanks = expected(lm, TEMPLATE)
    unruled = lm.infill_ids(TEMPLATE, **options)
    assert torch.isin(unruled[blanks.expand_as(unruled)], specials(lm)).any()
    assert not torch.isin(infilled[blanks.expand_as(infilled)], specials(lm)).any()


def test_infill_texts_blank_tokens_and_callback():
    lm = tiny_lm("masked")
    seen = []
    texts = lm.infill("the chef ___ the soup .", num_samples=2, seed=0, blank_tokens=3,
                      callback=lambda i, n, partial: seen.append(partial))
    assert len(texts) == 2 and all(t.startswith("the chef") and t.endswith(" the soup .") for t in texts)
    assert seen and "_" in seen[0][0] and "_" not in seen[-1][0]
    ids = lm.infill_ids("the chef ___ the soup .", seed=0, blank_tokens=3)
    _, _, blanks = expected(lm, "the chef ___ the soup .", blank_tokens=3)
    assert int(blanks.sum()) == 3 and not torch.isin(ids[blanks], specials(lm)).any()
    assert torch.equal(ids, lm.infill_ids("the chef ___ the soup .", seed=0, blank_tokens=3))  # seeded


def test_models_that_cannot_see_both_sides_are_refused():
    with pytest.raises(DlmsError, match="infilling needs a bidirectional model \\(masked or gaussian\\); this run is "
                                        "'ar'.*method.name=masked"):
        tiny_lm("ar").infill(TEMPLATE)
    with pytest.raises(DlmsError, match="this run is 'block'.*causal across blocks"):
        tiny_lm("block", **{"method.block_size": 4}).infill(TEMPLATE)


def test_bad_templates_and_options_are_refused():
    lm = tiny_lm("masked")
    with pytest.raises(ArgumentError, match=f"more than the model's {SEQ_LEN}"):
        lm.infill("the chef ___:30 the soup .")
    with pytest.raises(ArgumentError, match="needs at least one blank"):
        lm.infill("the chef cooked the soup .")
    with pytest.raises(ArgumentError, match="eta does not apply to the 'confidence' sampler"):
        lm.infill(TEMPLATE, eta=0.5)
    with pytest.raises(ArgumentError, match="num_samples must be an integer of at least 1"):
        lm.infill(TEMPLATE, num_samples=0)


# ---------------------------------------------------------------- the class of a fill


class ClassLoving(torch.nn.Module):
    """A stand-in masked network that ignores the context: under class c every position predicts
    token FIRST + c with logit 4 (0 elsewhere), so a given word FIRST + c is evidence for c."""

    FIRST = 10
    spec = SimpleNamespace(time_conditioning=False)

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab

    def forward(self, x, select=None, time=None, labels=None):
        logits = torch.zeros(*x.shape, self.vocab)
        logits[torch.arange(x.shape[0]), :, self.FIRST + labels] = 4.0
        return logits if select is None else logits[select]


def _class_canvas(given_ids: list[int]) -> tuple[torch.Tensor, torch.Tensor, object]:
    """(canvas [W], given [W], method): bos, the given ids, one blank, eos, padding."""
    method = build_method(load_config(None, tiny_overrides(Path("unused"))).method, special_tokens(TOKENIZER))
    s = method.special
    ids = given_ids + [s.mask]
    canvas, _, given = infill_canvas([s.bos], ids, [True] * len(given_ids) + [False], SEQ_LEN, eos=s.eos, pad=s.pad,
                                     mask_id=s.mask, padded=True, num_samples=1, device=torch.device("cpu"))
    return canvas[0], given[0], method


def test_class_scores_are_the_given_words_log_likelihoods_however_grouped(monkeypatch):
    """Every given word is hidden and scored exactly once, in whatever groups and batches: with a
    network that ignores the context the score is the sum of log p(word | class)."""
    canvas, given, method = _class_canvas([11, 11, 12, 11, 10])
    net = ClassLoving(method.special.vocab_size)
    scores = class_log_likelihoods(method, net, canvas, given, 3, groups=1)
    log_z = torch.logsumexp(torch.tensor([4.0] + [0.0] * (method.special.vocab_size - 2)), 0)  # mask excluded
    hits = torch.tensor([1.0, 3.0, 1.0])  # given words 10, 11, 12: once, three times, once
    assert torch.allclose(scores, hits * 4.0 - 5 * log_z, atol=1e-4)
    assert int(scores.argmax()) == 1
    for groups in (2, 4, 5, 50):
        assert torch.allclose(class_log_likelihoods(method, net, canvas, given, 3, groups=groups), scores, atol=1e-4)
    monkeypatch.setattr("dlms.infill.CLASS_BATCH", 2)  # rows split over several forwards
    assert torch.allclose(class_log_likelihoods(method, net, canvas, given, 3, groups=4), scores, atol=1e-4)
    assert torch.equal(class_log_likelihoods(method, net, canvas, torch.zeros_like(given), 3), torch.zeros(3))


def test_classes_are_drawn_from_the_posterior():
    sure = draw_classes(torch.tensor([0.0, 30.0, 0.0]), 50, torch.Generator().manual_seed(0))
    assert sure.tolist() == [1] * 50
    even = draw_classes(torch.zeros(3), 300, torch.Generator().manual_seed(0))
    assert set(even.tolist()) == {0, 1, 2}
    assert torch.equal(even, draw_classes(torch.zeros(3), 300, torch.Generator().manual_seed(0)))  # seeded


def test_infill_draws_the_class_from_the_template_unless_told():
    """A model trained with labels and no label given fills each sample under a class drawn from
    `infill_classes`' posterior (seeded); `label=` or `infer_label=False` (the null class) say otherwise."""
    lm = tiny_lm("masked", labels=["food", "music", "sports"])
    posterior = lm.infill_classes(TEMPLATE)
    assert list(posterior) == ["food", "music", "sports"] and abs(sum(posterior.values()) - 1) < 1e-5
    assert max(posterior.values()) > 0.4  # the classes read the template differently
    canvas, fixed, given, _ = lm._infill_canvas(TEMPLATE, None, 1)
    drawn = draw_classes(lm._class_scores(canvas[0], given[0]), 6, torch.Generator().manual_seed(3))
    names = [["food", "music", "sports"][int(k)] for k in drawn]
    inferred = lm.infill_ids(TEMPLATE, num_samples=6, seed=3, sampler="ancestral", steps=6)
    assert torch.equal(inferred, lm.infill_ids(TEMPLATE, num_samples=6, seed=3, sampler="ancestral", steps=6,
                                               label=names))
    null = lm.infill_ids(TEMPLATE, num_samples=6, seed=3, sampler="ancestral", steps=6, infer_label=False)
    chosen = lm.infill_ids(TEMPLATE, num_samples=6, seed=3, sampler="ancestral", steps=6, label="music")
    _, fixed, _ = expected(lm, TEMPLATE)
    for ids in (null, chosen):
        assert torch.equal(ids[fixed.expand_as(ids)], inferred[fixed.expand_as(inferred)])
        assert not torch.equal(ids, inferred)  # another class, other fills
    assert lm.infill(TEMPLATE, label=1, seed=0)[0].startswith("the chef")  # a class id works too


def test_a_bad_label_is_one_clear_error():
    lm = tiny_lm("masked", labels=["food", "music"])
    with pytest.raises(DlmsError, match="unknown label 'jazz' for column 'topic'; choose one of: food, music"):
        lm.infill(TEMPLATE, label="jazz")
    with pytest.raises(DlmsError, match="label id 5 is out of range 0..1"):
        lm.infill(TEMPLATE, label=5)
    with pytest.raises(DlmsError, match="2 labels for 3 samples; give one label or one per sample"):
        lm.infill(TEMPLATE, label=["food", "music"], num_samples=3)
    with pytest.raises(DlmsError, match="trained without labels; drop the label"):
        tiny_lm("masked").infill(TEMPLATE, label="food")


def test_models_without_classes_fill_as_before():
    """No classes (or a gaussian model): nothing to infer, infer_label changes nothing."""
    for lm in (tiny_lm("masked"), tiny_lm("gaussian", labels=["food", "music"])):
        assert lm.infill_classes(TEMPLATE) == {}
        options = dict(num_samples=2, seed=4, steps=6)
        assert torch.equal(lm.infill_ids(TEMPLATE, **options), lm.infill_ids(TEMPLATE, infer_label=False, **options))

