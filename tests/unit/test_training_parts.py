"""The trainer's parts: learning-rate schedule, EMA, gradient accumulation, atomic checkpoints."""
from __future__ import annotations

import json

import pytest
import torch

from dlms import DiffusionLM, Trainer
from dlms.config import TrainConfig, load_config
from dlms import checkpoint as ckpt_module
from dlms.training.ema import EMA
from dlms.training.optim import lr_factor
from tests.conftest import tiny_overrides


def test_lr_warms_up_linearly_then_decays_to_the_floor():
    factors = [lr_factor(s, warmup=10, total=110, min_ratio=0.1) for s in range(110)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(factors[:9], factors[1:10]))
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))
    assert factors[-1] == pytest.approx(0.1, abs=1e-3)
    assert lr_factor(500, warmup=10, total=110, min_ratio=0.1) == pytest.approx(0.1)


def test_ema_moves_a_fraction_towards_the_weights():
    model = torch.nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = EMA(model, decay=0.9)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)
    assert torch.allclose(ema.state_dict()["weight"], torch.full((2, 2), 0.1))


def test_gradient_accumulation_consumes_one_batch_per_micro_step(tmp_path):
    cfg = load_config(None, tiny_overrides(tmp_path / "r", steps=3, **{"train.grad_accum": 2}))
    trainer = Trainer(cfg)
    trainer.train()
    assert trainer.loader.state_dict()["position"] + trainer.loader.epoch * trainer.loader.steps_per_epoch == 6


def test_ema_weights_are_saved_and_used_for_sampling(tmp_path):
    out = tmp_path / "ema"
    Trainer(load_config(None, tiny_overrides(out, steps=4, **{"train.ema_decay": 0.5}))).train()
    from safetensors.torch import load_file

    live = load_file(str(out / "checkpoint" / "model.safetensors"))
    ema = load_file(str(out / "checkpoint" / "ema.safetensors"))
    assert any(not torch.equal(live[k], ema[k]) for k in live)
    lm = DiffusionLM.load_checkpoint(out)
    assert torch.equal(lm.model.state_dict()["embed.weight"], ema["embed.weight"])
    raw = DiffusionLM.load_checkpoint(out, use_ema=False)
    assert torch.equal(raw.model.state_dict()["embed.weight"], live["embed.weight"])


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    out = tmp_path / "atomic"
    trainer = Trainer(load_config(None, tiny_overrides(out, steps=8, **{"train.save_every": 4})))
    original = ckpt_module._write_tensors
    calls = {"n": 0}

    def failing_write(tensors, path):
        calls["n"] += 1
        if calls["n"] > 1:  # the second checkpoint dies half-written
            raise OSError("disk full")
        original(tensors, path)

    monkeypatch.setattr(ckpt_module, "_write_tensors", failing_write)
    with pytest.raises(OSError):
        trainer.train()
    state = json.loads((out / "checkpoint" / "trainer_state.json").read_text())
    assert state["step"] == 4
    DiffusionLM.load_checkpoint(out)  # still complete and loadable


def test_train_config_defaults_are_valid():
    t = TrainConfig()
    assert t.batch_size > 0 and 0 < t.learning_rate < 1 and t.precision in ("auto", "bf16", "fp32")


@pytest.mark.parametrize("method", ["masked", "ar"])
def test_bf16_autocast_trains(tmp_path, method):
    trainer = Trainer(load_config(None, tiny_overrides(tmp_path / method, method=method, steps=3,
                                                       **{"train.precision": "bf16"})))
    summary = trainer.train()
    assert torch.isfinite(torch.tensor(summary["loss"]))
    assert trainer.model.embed.weight.dtype == torch.float32  # autocast: master weights stay fp32


def test_best_validation_weights_are_kept_apart(tmp_path):
    out = tmp_path / "best"
    trainer = Trainer(load_config(None, tiny_overrides(out, steps=8, **{"train.eval_every": 4})))
    trainer.train()
    best = json.loads((out / "best" / "trainer_state.json").read_text())
    vals = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines() if "val_nll" in l]
    assert best["best_val"] == min(v["val_nll"] for v in vals)
    assert best["step"] == min(vals, key=lambda v: v["val_nll"])["step"]
    assert DiffusionLM.load_checkpoint(out / "best").method.name == "masked"


def test_validation_and_the_best_checkpoint_use_the_moving_average(tmp_path):
    """With EMA the best checkpoint and `eval_model` hold the average, and training goes on from
    the raw weights (the average is swapped in for validation and back out)."""
    from safetensors.torch import load_file

    out = tmp_path / "ema-best"
    trainer = Trainer(load_config(None, tiny_overrides(out, steps=4, **{"train.ema_decay": 0.5, "train.eval_every": 4,
                                                                        "train.save_every": 4})))
    trainer.train()
    final = load_file(str(out / "checkpoint" / "model.safetensors"))
    ema = load_file(str(out / "checkpoint" / "ema.safetensors"))
    best = load_file(str(out / "best" / "model.safetensors"))
    assert not torch.equal(final["embed.weight"], ema["embed.weight"])
    assert torch.equal(best["embed.weight"], ema["embed.weight"])  # the average, not the raw weights
    assert torch.equal(trainer.model.state_dict()["embed.weight"], final["embed.weight"])  # raw weights restored
    assert torch.equal(trainer.eval_model().state_dict()["embed.weight"], ema["embed.weight"])
    assert torch.equal(trainer.model.state_dict()["embed.weight"], final["embed.weight"])
