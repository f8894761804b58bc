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

    return train_stage(name="toy", cfg=cfg, model=model, param_groups=[{"params": list(model.parameters())}], loss_fn=loss_fn,
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
        train_stage(name="toy", cfg=cfg, model=model, param_groups=[{"params": list(model.parameters())}], loss_fn=loss_fn,
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
    ({"diffusion": {"steps": 0}}, "diffusion.steps must be at least 1"),
    ({"decoder": {"learning_rate": -1.0}}, "decoder.learning_rate must be positive"),
    ({"diffusion": {"ema_decay": 1.0}}, "ema_decay must lie in"),
    ({"generation": {"renoise_level": 1.5}}, "renoise_level must lie in"),
    ({"data": {"val_fraction": 0.0}}, "val_fraction must be between"),
    ({"decoder": {"soft_tokens": 4}}, "unknown config key 'decoder.soft_tokens'"),
    ({"generation": {"sampler": "euler"}}, "sampler"),
])
def test_bad_dglm_config_values_are_one_line_errors(data, message):
    from dlms.dglm.config import dglm_config_from_dict
    from dlms.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        dglm_config_from_dict(data)


def test_an_unknown_stage_is_refused(tmp_path):
    from dlms.dglm import DglmConfig, DglmTrainer
    from dlms.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown stage 'sample'"):
        DglmTrainer(DglmConfig(out_dir=str(tmp_path), device="cpu")).run(("sample",))
