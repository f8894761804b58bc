"""DGLM's training loop and data helpers: exact resume, a NaN loss keeps the last checkpoint,
token batches for the decoder, the built-in prompts' neutral words and the TF-IDF judge."""
from __future__ import annotations

import copy

import pytest
import torch

from dlms.dglm.config import StageTrainConfig
from dlms.dglm.stage_loop import train_stage
from dlms.errors import TrainingDiverged
from dlms.training.progress import MetricsLog


def run(model, steps: int, saved: dict, fail_at: int | None = None, resume=({}, None), tmp_path=None, ema=0.0):
    cfg = StageTrainConfig(steps=steps, batch_size=4, learning_rate=0.05, warmup_steps=1, save_every=2, ema_decay=ema)
    data = torch.randn(32, 3, generator=torch.Generator().manual_seed(0))

    def loss_fn(gen):
        if fail_at is not None and int(saved.get("calls", 0)) == fail_at:
            raise KeyboardInterrupt
        saved["calls"] = saved.get("calls", 0) + 1
        idx = torch.randint(32, (4,), generator=gen)
        return ((model(data[idx]) - data[idx].sum(-1, keepdim=True)) ** 2).mean()

    def save(progress, optimizer_state):
        saved["state"] = (dict(progress), copy.deepcopy(optimizer_state), copy.deepcopy(model.state_dict()))

    return train_stage(name="toy", cfg=cfg, model=model, param_groups=lambda m: [{"params": list(m.parameters())}], loss_fn=loss_fn,
                       save=save, val_fn=lambda: 0.0, device=torch.device("cpu"), seed=0,
                       metrics=MetricsLog(tmp_path / "m.jsonl", True), resume=resume, log=lambda _: None)


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_an_interrupted_stage_resumed_from_its_checkpoint_repeats_the_uninterrupted_one(tmp_path, ema):
    torch.manual_seed(0)
    straight = torch.nn.Linear(3, 1)
    start = copy.deepcopy(straight.state_dict())
    straight_saved: dict = {}
    run(straight, 6, straight_saved, tmp_path=tmp_path, ema=ema)

    interrupted = torch.nn.Linear(3, 1)
    interrupted.load_state_dict(start)
    saved: dict = {}
    with pytest.raises(KeyboardInterrupt):
        run(interrupted, 6, saved, fail_at=5, tmp_path=tmp_path, ema=ema)  # dies during step 6; step 4 was saved
    progress, optimizer_state, weights = saved["state"]
    assert progress["step"] == 4
    resumed = torch.nn.Linear(3, 1)
    resumed.load_state_dict(weights)  # what the stage saved: the average when ema > 0
    resumed_saved: dict = {}
    run(resumed, 6, resumed_saved, resume=(progress, optimizer_state), tmp_path=tmp_path, ema=ema)
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.allclose(a, b)
    for name, value in straight_saved["state"][2].items():
        assert torch.allclose(value, resumed_saved["state"][2][name])
    assert not torch.allclose(straight.weight, torch.nn.Linear(3, 1).weight)
    averaged = not torch.allclose(straight_saved["state"][2]["weight"], straight.weight)
    assert averaged == (ema > 0)


def test_a_nan_loss_stops_the_stage_and_keeps_the_last_checkpoint(tmp_path):
    model = torch.nn.Linear(3, 1)
    saves = []
    cfg = StageTrainConfig(steps=6, batch_size=4, learning_rate=0.01, warmup_steps=1, save_every=2)
    calls = iter(range(100))

    def loss_fn(gen):
        i = next(calls)
        return model(torch.ones(1, 3)).sum() * (float("nan") if i == 3 else 1.0)

    with pytest.raises(TrainingDiverged, match="last checkpoint .step 2. was kept"):
        train_stage(name="toy", cfg=cfg, model=model, param_groups=lambda m: [{"params": list(m.parameters())}], loss_fn=loss_fn,
                    save=lambda p, o: saves.append(p["step"]), val_fn=lambda: 0.0, device=torch.device("cpu"),
                    seed=0, metrics=MetricsLog(tmp_path / "m.jsonl", True), log=lambda _: None)
    assert saves == [2]


def test_pair_tokenizer_pads_prefixes_left_and_continuations_right(trained_runs):
    from dlms.dglm.data import PairTokenizer
    from dlms.dglm.decoder_loading import load_decoder

    tok = load_decoder(str(trained_runs["ar"])).tokenizer
    pairs = PairTokenizer(tok, max_prefix_tokens=6, max_continuation_tokens=40)
    prefixes = pairs.prefixes(["the", "the chef cooked a great steak"])
    assert prefixes.shape[0] == 2 and prefixes.shape[1] <= 6
    assert prefixes[1, 0] == pairs.bos_id or prefixes.shape[1] == 6
    assert prefixes[0, -2] == pairs.bos_id and prefixes[0, 0] == pairs.pad_id
    ids, mask = pairs.continuations(["was great .", "ok"])
    assert ids[0, mask[0].sum() - 1] == pairs.eos_id and not mask[1, -1]
    assert pairs.decode(ids) == ["was great .", "ok"]


def test_neutral_words_leave_the_sentiment_open():
    from dlms.data.corpus import check_text, sentiment_neutral_words

    neutral = sentiment_neutral_words()
    assert {"the", "steak", "is"} <= neutral
    assert "wonderful" not in neutral and "bland" not in neutral
    assert check_text("the steak is wonderful .").sentiment == "positive"


def test_the_tfidf_judge_reads_the_label_of_the_continuation():
    from dlms.dglm.judges import TfidfJudge

    texts = [f"the food was {w}" for w in ("great", "lovely", "awful", "bad")] * 10
    labels = ["pos", "pos", "neg", "neg"] * 10
    judge = TfidfJudge.fit("mood", (texts, labels), (texts[:8], labels[:8]))
    assert judge.held_out_accuracy == 1.0 and judge.classes == ["neg", "pos"]
    verdict = judge.judge(["x", "x"], ["so great", "so awful"], ["pos", "pos"])
    assert verdict["success"] == [True, False]


@pytest.mark.parametrize("data, message", [
    ({"diffusion": {"steps": 0}}, "'diffusion.steps' must be at least 1, got 0"),
    ({"decoder": {"batch_size": -2}}, "'decoder.batch_size' must be at least 1, got -2"),
    ({"diffusion": {"save_every": 0}}, "'diffusion.save_every' must be at least 1"),
    ({"decoder": {"learning_rate": -1.0}}, "'decoder.learning_rate' must be positive, got -1.0"),
    ({"diffusion": {"learning_rate": ".nan"}}, "'diffusion.learning_rate' must be"),
    ({"diffusion": {"warmup_steps": -1}}, "'diffusion.warmup_steps' must be at least 0"),
    ({"decoder": {"weight_decay": -0.1}}, "'decoder.weight_decay' must be at least 0"),
    ({"decoder": {"grad_clip": 0.0}}, "'decoder.grad_clip' must be positive"),
    ({"diffusion": {"ema_decay": 1.0}}, r"'diffusion.ema_decay' must be in \[0, 1\)"),
    ({"decoder": {"decoder_learning_rate": -1e-4}}, "'decoder.decoder_learning_rate' must be at least 0"),
    ({"decoder": {"max_noise_level": 0.0}}, r"'decoder.max_noise_level' must be in \(0, 1\]"),
    ({"decoder": {"max_prefix_tokens": 1}}, "'decoder.max_prefix_tokens' must be at least 2"),
    ({"decoder": {"num_soft_tokens": 0}}, "'decoder.num_soft_tokens' must be at least 1"),
    ({"generation": {"renoise_level": 1.5}}, r"'generation.renoise_level' must be in \[0, 1\], got 1.5"),
    ({"generation": {"eta": -0.5}}, r"'generation.eta' must be in \[0, 1\]"),
    ({"generation": {"num_steps": 0}}, "'generation.num_steps' must be at least 1"),
    ({"generation": {"max_tokens": 0}}, "'generation.max_tokens' must be at least 1"),
    ({"generation": {"temperature": -1.0}}, "'generation.temperature' must be at least 0"),
    ({"generation": {"guidance": -1.0}}, "'generation.guidance' must be at least 0"),
    ({"generation": {"control_samples": 0}}, "'generation.control_samples' must be at least 1"),
    ({"generation": {"control_noise": -0.1}}, "'generation.control_noise' must be at least 0"),
    ({"data": {"val_fraction": 0.0}}, r"'data.val_fraction' must be in \(0, 1\)"),
    ({"data": {"min_words": 0}}, "'data.min_words' must be at least 1"),
    ({"data": {"max_texts": 0}}, "'data.max_texts' must be at least 1"),
    ({"seed": -1}, "'seed' must be between 0 and"),
    ({"latent": {"cond_drop_prob": 2.0}}, r"'latent.cond_drop_prob' must be in \[0, 1\]"),
    ({"latent": {"d_model": 30, "n_heads": 4}}, "'latent.d_model' .30. must be divisible by latent.n_heads .4."),
    ({"latent": {"schedule": "cosine"}}, "'latent.schedule' must be a gaussian schedule"),
    ({"precision": "fp16"}, "precision"),
    ({"decoder": {"soft_tokens": 4}}, "unknown config key 'decoder.soft_tokens'"),
    ({"generation": {"sampler": "euler"}}, "sampler"),
])
def test_bad_dglm_config_values_are_one_line_errors(data, message):
    from dlms.dglm.config import dglm_config_from_dict
    from dlms.errors import ConfigError

    with pytest.raises(ConfigError, match=message) as info:
        dglm_config_from_dict(data)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("key, value", [("diffusion.learning_rate", float("nan")), ("generation.cfg_scale", float("inf")),
                                        ("generation.guidance", float("inf")), ("decoder.grad_clip", float("-inf")),
                                        ("generation.control_noise", float("nan"))])
def test_every_float_of_the_dglm_config_must_be_finite(key, value):
    """NaN and infinity are refused by the range checks themselves, whatever the YAML reader lets through."""
    from dataclasses import replace

    from dlms.dglm.config import DglmConfig, check_dglm_config
    from dlms.errors import ConfigError

    section, name = key.split(".")
    cfg = DglmConfig()
    cfg = replace(cfg, **{section: replace(getattr(cfg, section), **{name: value})})
    with pytest.raises(ConfigError, match=f"'{key}' must be .*, got {value!r}"):
        check_dglm_config(cfg)


def test_an_unknown_stage_is_refused(tmp_path):
    from dlms.dglm import DglmConfig, DglmTrainer
    from dlms.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown stage 'sample'"):
        DglmTrainer(DglmConfig(out_dir=str(tmp_path), device="cpu")).run(("sample",))


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_a_stage_runs_its_forward_and_loss_under_the_precision_and_keeps_float32_weights(tmp_path, precision):
    model = torch.nn.Linear(3, 1)
    seen = []
    data = torch.randn(16, 3, generator=torch.Generator().manual_seed(0))

    def loss_fn(gen):
        seen.append((torch.is_autocast_enabled("cpu"), model(data).dtype))
        return ((model(data) - data.sum(-1, keepdim=True)) ** 2).float().mean()

    def val_fn():
        seen.append((torch.is_autocast_enabled("cpu"), model(data).dtype))
        return 1.0

    cfg = StageTrainConfig(steps=4, batch_size=4, learning_rate=0.05, warmup_steps=1, save_every=2)
    record = train_stage(name="toy", cfg=cfg, model=model, param_groups=lambda m: [{"params": list(m.parameters())}],
                         loss_fn=loss_fn, save=lambda p, o: None, val_fn=val_fn, device=torch.device("cpu"), seed=0,
                         metrics=MetricsLog(tmp_path / "m.jsonl", True), log=lambda _: None, precision=precision)
    expected = (True, torch.bfloat16) if precision == "bf16" else (False, torch.float32)
    assert seen and set(seen) == {expected}
    assert record["step"] == 4 and model.weight.dtype == torch.float32
    assert not torch.is_autocast_enabled("cpu")  # nothing leaks out of the stage


def test_a_training_state_that_does_not_fit_the_config_is_a_one_line_error(tmp_path):
    from dlms.errors import CheckpointError

    one = torch.nn.Linear(3, 1)
    saved: dict = {}
    run(one, 2, saved, tmp_path=tmp_path)
    progress, optimizer_state, _ = saved["state"]
    two = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))  # another parameter layout
    cfg = StageTrainConfig(steps=4, batch_size=4, save_every=2)
    with pytest.raises(CheckpointError, match="does not fit this config"):
        train_stage(name="toy", cfg=cfg, model=two, param_groups=lambda m: [{"params": list(m.parameters())}],
                    loss_fn=lambda g: two(torch.ones(1, 3)).sum(), save=lambda p, o: None, val_fn=lambda: 0.0,
                    device=torch.device("cpu"), seed=0, metrics=MetricsLog(tmp_path / "m.jsonl", True),
                    resume=(progress, optimizer_state), log=lambda _: None)


@pytest.mark.parametrize("label, stem", [
    ("sentiment", "sentiment"), ("../x", "_x"), ("..", "_"), ("", "_"), ("a/b\\c", "a_b_c"), (".hidden", "hidden"),
    ("../../etc/passwd", "_.._etc_passwd"), ("mood v2.1", "mood_v2.1"), ("ünï", "_n_"), ("/abs", "_abs"),
])
def test_a_label_becomes_a_file_name_that_stays_in_its_folder(tmp_path, label, stem):
    from dlms.paths import safe_stem

    got = safe_stem(label)
    assert got == stem
    assert "/" not in got and "\\" not in got and not got.startswith(".")
    folder = (tmp_path / "classifiers").resolve()
    assert (folder / got).resolve().parent == folder


def test_accumulated_batches_average_their_gradients(tmp_path):
    """grad_accum=2 at batch 4 takes the step of the mean loss of the two batches it draws."""
    data = torch.randn(32, 3, generator=torch.Generator().manual_seed(0))
    drawn = []

    def stage(model, accum, record):
        def loss_fn(gen):
            idx = torch.randint(32, (4,), generator=gen)
            if record:
                drawn.append(idx)
            return ((model(data[idx]) - data[idx].sum(-1, keepdim=True)) ** 2).mean()

        cfg = StageTrainConfig(steps=1, batch_size=4, learning_rate=0.05, warmup_steps=1, save_every=1,
                               grad_accum=accum)
        train_stage(name="toy", cfg=cfg, model=model, param_groups=lambda m: [{"params": list(m.parameters())}],
                    loss_fn=loss_fn, save=lambda p, o: None, val_fn=lambda: 0.0, device=torch.device("cpu"), seed=0,
                    metrics=MetricsLog(tmp_path / "m.jsonl", True), log=lambda _: None)

    torch.manual_seed(0)
    accumulated = torch.nn.Linear(3, 1)
    start = copy.deepcopy(accumulated.state_dict())
    stage(accumulated, 2, record=True)
    assert len(drawn) == 2 and not torch.equal(drawn[0], drawn[1])  # two different batches
    by_hand = torch.nn.Linear(3, 1)
    by_hand.load_state_dict(start)
    loss = sum(((by_hand(data[i]) - data[i].sum(-1, keepdim=True)) ** 2).mean() for i in drawn) / 2
    loss.backward()
    grads = [p.grad.clone() for p in by_hand.parameters()]
    optimizer = torch.optim.AdamW(by_hand.parameters(), lr=0.05, weight_decay=0.01)
    torch.nn.utils.clip_grad_norm_(by_hand.parameters(), 1.0)
    optimizer.step()
    assert all(g.abs().sum() > 0 for g in grads)
    for a, b in zip(accumulated.parameters(), by_hand.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
