"""Contract tests over every registered method, sampler and schedule, on three backbones, at
both precisions forced explicitly.

The grid is read from the registries, so a newly registered part is covered the day it is
registered:

- method x backbone x precision: train a few steps through the CLI (class-conditioned, so
  that guidance is covered too), resume for a few more, load the checkpoint, sample with
  every compatible sampler (plain and guided) and evaluate the likelihood, which must agree
  with the same weights evaluated in float32; a causal method's KV-cached decoding must
  agree with full forwards;
- schedule (of each kind) x precision: a short train and sample on the built-in backbone.

Backbones: every registered backbone kind (the built-in transformer, preset tiny), and a tiny
Qwen2 and a tiny GPT-2 built from a config and saved to a folder (the Hugging Face wrapper's kind) (GPT-2's tokenizer has no pad or mask token: dlms adds them).
bf16 is forced, not left to `auto`: a machine without native bf16 must pass the bf16 half too.
Each run is trained once per module and shared by the tests that read it.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from dlms.backbones import BACKBONES as BACKBONE_KINDS, backbone_kind
from dlms.cli import main
from dlms.methods import METHODS
from dlms.model import DiffusionLM
from dlms.samplers import SAMPLERS
from dlms.samplers.autoregressive import compute_dtype
from dlms.schedules import SCHEDULES, schedule_names
from tests.backbone_helpers import plain_tokenizer
from tests.conftest import tiny_overrides

HF_ARCHS = ("qwen2", "gpt2")  # not registered names: folders of these go to the Hugging Face wrapper
BACKBONES = (*BACKBONE_KINDS.names(), *HF_ARCHS)
PRECISIONS = ("fp32", "bf16")
STEPS, RESUMED_STEPS = 2, 4
SEQ_LEN = 16
SCHEDULE_METHOD = {"masking": "masked", "gaussian": "gaussian"}  # the method that uses each kind of schedule
# Largest relative gap between a bf16 and a float32 evaluation of the same weights: measured
# <= 3e-5 (masked, ar) and <= 2.3e-4 (gaussian); bf16 products in the gaussian bound made it 1e-2.
PRECISION_GAP = 2e-3
TEXTS = ["the cat sat on the mat.", "a dog ran in the park!", "the chef cooked a fine soup."] * 30


def compatible_samplers(method: str) -> list[str]:
    return [name for name in SAMPLERS.names() if method in SAMPLERS.get(name).method_names]


def fits(method: str, backbone: str) -> bool:
    """A method that passes an attention mask to the backbone (block) refuses a backbone kind that
    takes none at config resolution; tests/unit/test_block_method.py checks that error."""
    return not METHODS.get(method).needs_attention_mask or backbone_kind(backbone).takes_attention_mask


RUNS = [(m, b, p) for m in METHODS.names() for b in BACKBONES for p in PRECISIONS if fits(m, b)]
CAUSAL_RUNS = [(m, b, p) for m, b, p in RUNS if METHODS.get(m).causal]
SAMPLES = [(m, s, b, p) for m, b, p in RUNS for s in compatible_samplers(m)]
SCHEDULE_RUNS = [(kind, name, p) for kind in SCHEDULE_METHOD for name in schedule_names(kind) for p in PRECISIONS]


def _ids(params) -> list[str]:
    return ["-".join(p) for p in params]


def _overrides(out: Path, method: str, precision: str, backbone: str = "transformer", **extra) -> list[str]:
    """A run of STEPS steps that evaluates and saves at its end."""
    return tiny_overrides(out, method, STEPS, **{
        "model.backbone": backbone, "train.precision": precision, "data.builtin_examples": 200,
        "data.seq_len": SEQ_LEN, "train.batch_size": 4, "train.eval_every": STEPS, "train.save_every": STEPS,
        "train.eval_batches": 1, "train.warmup_steps": 1, "sample.num_steps": 4, **extra})


def _labelled(out: Path, method: str, precision: str, backbone: str) -> list[str]:
    """`_overrides` with class conditioning on the built-in corpus's sentiment column."""
    return _overrides(out, method, precision, backbone, **{"data.label_column": "sentiment"})


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------------- fixtures


def _plain_tokenizer():
    """A GPT-2 style byte-level BPE whose only special token is <|endoftext|>."""
    return plain_tokenizer(TEXTS)


@pytest.fixture(scope="module")
def backbones(tmp_path_factory) -> dict[str, str]:
    """{backbone name: the value of model.backbone}: tiny Hugging Face models saved as folders."""
    from transformers import AutoModelForCausalLM, GPT2Config, Qwen2Config

    from dlms.data.tokenizer import train_bpe_tokenizer

    out = {name: name for name in BACKBONE_KINDS.names()}
    for arch in HF_ARCHS:
        tokenizer = train_bpe_tokenizer(TEXTS, 300) if arch == "qwen2" else _plain_tokenizer()
        if arch == "qwen2":
            config = Qwen2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                 num_key_value_heads=1, vocab_size=len(tokenizer), max_position_embeddings=64,
                                 tie_word_embeddings=True)
        else:
            config = GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=len(tokenizer), n_positions=64,
                                bos_token_id=0, eos_token_id=0)
        folder = tmp_path_factory.mktemp(arch)
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(config).save_pretrained(str(folder))
        tokenizer.save_pretrained(str(folder))
        out[arch] = str(folder)
    return out


@pytest.fixture(scope="module")
def trained(backbones, tmp_path_factory):
    """get(method, backbone, precision) -> (run dir, DiffusionLM): trained STEPS steps through the
    CLI, resumed to RESUMED_STEPS, loaded from its checkpoint; each run once per module."""
    cache: dict[tuple[str, str, str], tuple[Path, DiffusionLM]] = {}

    def get(method: str, backbone: str, precision: str) -> tuple[Path, DiffusionLM]:
        key = (method, backbone, precision)
        if key not in cache:
            run = tmp_path_factory.mktemp("-".join(key))
            assert main(["train", "--samples", "0", *_labelled(run, method, precision, backbones[backbone])]) == 0
            assert main(["train", "--resume", str(run), "--max_steps", str(RESUMED_STEPS), "--samples", "0"]) == 0
            cache[key] = run, DiffusionLM.load_checkpoint(run, device="cpu")
        return cache[key]

    return get


# ---------------------------------------------------------------------- method x backbone x precision


@pytest.mark.parametrize("method, backbone, precision", RUNS, ids=_ids(RUNS))
def test_train_and_resume(trained, method, backbone, precision):
    """Every step logs a finite loss, the resumed run ends at its new step count, and the
    checkpoint saves the forced precision and float32 weights."""
    run, lm = trained(method, backbone, precision)
    lines = _metrics(run)
    losses = {line["step"]: line["loss"] for line in lines if "loss" in line}
    assert sorted(losses) == list(range(1, RESUMED_STEPS + 1))
    assert all(math.isfinite(v) for v in losses.values())
    assert [line["step"] for line in lines if "val_nll" in line] == [STEPS, RESUMED_STEPS]
    assert all(math.isfinite(line["val_nll"]) for line in lines if "val_nll" in line)
    ckpt = run / "checkpoint"
    assert json.loads((ckpt / "trainer_state.json").read_text())["step"] == RESUMED_STEPS
    cfg = yaml.safe_load((ckpt / "config.yaml").read_text())
    assert cfg["train"]["precision"] == precision and cfg["method"]["name"] == method
    assert lm.precision == precision
    assert all(p.dtype == torch.float32 for p in lm.model.parameters())


@pytest.mark.parametrize("method, sampler, backbone, precision", SAMPLES, ids=_ids(SAMPLES))
def test_every_compatible_sampler(trained, method, sampler, backbone, precision):
    """Token ids [N, L] in the vocabulary, the prompt kept, no mask token left, texts decoded:
    with the defaults, with classifier-free guidance towards one label per sample, and with
    every other option the sampler declares; an option it does not take is an error."""
    from dlms.errors import ArgumentError
    from dlms.model import SAMPLING_ARGUMENTS

    _, lm = trained(method, backbone, precision)
    prefix = torch.tensor(lm.encode_prompt("the cat"))
    declared = SAMPLERS.get(sampler).options
    steps = {"steps": 4} if "num_steps" in declared else {}
    values = {"temperature": 0.5, "top_k": 5, "top_p": 0.9, "eta": 0.5, "clamp": True, "tokens_per_step": 3,
              "block_size": 4, "threshold": 0.5, "confidence": "margin", "remasking": "random", "text_end": "frontier",
              "cache": "dual" if backbone == "transformer" else "none"}
    every_other = {SAMPLING_ARGUMENTS[o]: values[SAMPLING_ARGUMENTS[o]] for o in declared if SAMPLING_ARGUMENTS[o] in values}
    option_sets = ({}, {"label": lm.balanced_labels(2), "guidance": 2.0}, every_other)
    for options in option_sets:
        ids = lm.sample_ids("the cat", SEQ_LEN, num_samples=2, sampler=sampler, seed=0, **steps, **options)
        assert ids.shape == (2, SEQ_LEN) and ids.dtype == torch.long
        assert int(ids.min()) >= 0 and int(ids.max()) < lm.method.special.vocab_size
        assert (ids[:, : len(prefix)] == prefix).all()
        assert not (ids == lm.method.special.mask).any()
        texts = lm.decode(ids)
        assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    # The steps a sampler reports are the callbacks it made, and its network calls are the passes
    # through the backbone (every forward runs `hidden` once; a block model's cache writes call it directly).
    steps, passes = [], [0]
    inner = lm.model.hidden

    def counted(*args, **kwargs):
        passes[0] += 1
        return inner(*args, **kwargs)

    lm.model.hidden = counted
    try:
        lm.sample_ids("the cat", SEQ_LEN, num_samples=2, sampler=sampler, seed=1,
                      callback=lambda i, n, x: steps.append(i), **({"steps": 4} if "num_steps" in declared else {}))
    finally:
        del lm.model.hidden
    stats = lm.last_sampler.stats
    assert stats.steps == len(steps) > 0 and stats.network_calls == passes[0] > 0
    undeclared = [a for o, a in SAMPLING_ARGUMENTS.items() if o not in declared]
    for argument in undeclared:
        with pytest.raises(ArgumentError, match=f"does not apply to the '{sampler}' sampler"):
            lm.sample_ids("the cat", SEQ_LEN, num_samples=1, sampler=sampler, **{argument: 1})


@pytest.mark.parametrize("method, backbone, precision", RUNS, ids=_ids(RUNS))
def test_evaluate(trained, method, backbone, precision):
    """A finite, positive NLL (bound) per token with a finite standard error, within
    PRECISION_GAP of the same weights evaluated in float32 (same seeds, same noise)."""
    _, lm = trained(method, backbone, precision)
    result = lm.evaluate(passes=2, max_sequences=8)
    assert math.isfinite(result["nll"]) and result["nll"] > 0
    assert math.isfinite(result["se"]) and result["sequences"] == 8
    assert result["bound"] is lm.method.stochastic_bound
    if precision != "fp32":
        exact = lm.evaluate(passes=2, max_sequences=8, precision="fp32")["nll"]
        assert result["nll"] == pytest.approx(exact, rel=PRECISION_GAP)


@pytest.mark.parametrize("method, backbone, precision", CAUSAL_RUNS, ids=_ids(CAUSAL_RUNS))
def test_kv_cache_matches_full_forward(trained, method, backbone, precision):
    """Decoding a prompt then one token at a time through the sampler's KV cache gives the
    logits of one full forward pass (up to bf16 rounding)."""
    _, lm = trained(method, backbone, precision)
    x = torch.from_numpy(lm.dataset().val.ids[:2, :SEQ_LEN].astype("int64"))
    model = lm.model
    with torch.no_grad(), lm.autocast():
        full = model(x).float()
        cache = model.new_cache(2, SEQ_LEN, x.device, compute_dtype(next(model.parameters())))
        steps = [model(x[:, :4], cache=cache)] + [model(x[:, i : i + 1], cache=cache) for i in range(4, SEQ_LEN)]
    cached = torch.cat(steps, dim=1).float()
    assert cached.shape == full.shape and torch.isfinite(full).all()
    tolerance = 1e-4 if precision == "fp32" else 0.05
    assert (cached - full).abs().max() <= tolerance * max(1.0, float(full.abs().max()))


# ---------------------------------------------------------------------- schedule x precision


def test_every_schedule_kind_has_a_method_here():
    """A schedule of a new kind fails here, instead of being left out of the grid below."""
    kinds = {getattr(SCHEDULES.get(name), "kind", None) for name in SCHEDULES.names()}
    assert kinds <= set(SCHEDULE_METHOD), f"add the method that uses schedules of kind {kinds - set(SCHEDULE_METHOD)}"
    assert all(schedule_names(kind) for kind in SCHEDULE_METHOD)


@pytest.mark.parametrize("kind, schedule, precision", SCHEDULE_RUNS, ids=_ids(SCHEDULE_RUNS))
def test_every_schedule_trains_and_samples(tmp_path, kind, schedule, precision):
    """A short run with each registered schedule saves it by name, logs finite losses and samples."""
    assert getattr(SCHEDULES.get(schedule), "kind", None) == kind
    method = SCHEDULE_METHOD[kind]
    assert main(["train", "--samples", "0", *_overrides(tmp_path, method, precision,
                                                         **{"method.schedule": schedule})]) == 0
    losses = [line["loss"] for line in _metrics(tmp_path) if "loss" in line]
    assert len(losses) == STEPS and all(math.isfinite(v) for v in losses)
    lm = DiffusionLM.load_checkpoint(tmp_path, device="cpu")
    assert lm.cfg.method.schedule == schedule and lm.method.schedule_name == schedule
    ids = lm.sample_ids(None, SEQ_LEN, 4, num_samples=2, seed=0)
    assert ids.shape == (2, SEQ_LEN)
    assert int(ids.min()) >= 0 and int(ids.max()) < lm.method.special.vocab_size
    assert not (ids == lm.method.special.mask).any()


@pytest.mark.parametrize("sampler", SAMPLERS.names())
def test_a_sampler_declares_its_options_and_swallows_none(sampler):
    """`options` names what `sample` takes; no **kwargs hides an option that does not apply."""
    import inspect

    from dlms.model import SAMPLING_ARGUMENTS

    cls = SAMPLERS.get(sampler)
    params = inspect.signature(cls.sample).parameters
    assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    assert set(cls.options) <= set(params) and set(cls.options) <= set(SAMPLING_ARGUMENTS)


BUILTIN_FP32 = [m for m, b, p in RUNS if b == "transformer" and p == "fp32"]


@pytest.mark.parametrize("method", BUILTIN_FP32)
def test_a_shorter_sample_keeps_the_model_on_its_training_length(trained, method):
    """A bidirectional model samples a shorter text on a canvas of its training length, the
    tail held as padding (padded data), and returns the asked length; a causal one decodes only
    what is asked."""
    _, lm = trained(method, "transformer", "fp32")
    widths, inner = [], lm.model.hidden

    def hidden(input_ids=None, **kwargs):
        widths.append((input_ids if input_ids is not None else kwargs["inputs_embeds"]).shape[1])
        return inner(input_ids, **kwargs)

    lm.model.hidden = hidden
    try:
        sampler = {"gaussian": "ddim", "ar": "ar"}.get(method, "confidence")
        ids = lm.sample_ids(None, 8, num_samples=2, sampler=sampler, seed=0,
                            **({} if method == "ar" else {"steps": 4}))
    finally:
        del lm.model.hidden
    assert ids.shape == (2, 8) and not (ids == lm.method.special.mask).any()
    if lm.method.causal:
        assert max(widths) <= 8
    else:
        assert max(widths) == SEQ_LEN
        assert lm.cfg.data.layout == "padded"
        canvas, fixed = lm.canvas(None, 8, 1)
        assert canvas.shape[1] == SEQ_LEN and fixed[0, 8:].all() and (canvas[0, 8:] == lm.method.special.pad).all()


@pytest.mark.parametrize("method", BUILTIN_FP32)
def test_only_a_method_that_extends_past_its_training_length_samples_longer(trained, method):
    """Block diffusion decodes blocks left to right, so it may write past its training length
    (with an exact cache); every other method refuses a length above it with one clear error."""
    from dlms.errors import ArgumentError

    _, lm = trained(method, "transformer", "fp32")
    longer = 2 * SEQ_LEN
    if lm.method.extends_past_training_length:
        ids = lm.sample_ids(None, longer, num_samples=2, seed=0, cache="dual")
        assert ids.shape == (2, longer) and not (ids == lm.method.special.mask).any()
    else:
        with pytest.raises(ArgumentError, match="exceeds the model's maximum"):
            lm.sample_ids(None, longer, num_samples=1, seed=0)
