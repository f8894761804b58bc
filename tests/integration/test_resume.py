"""An interrupted and resumed run logs exactly the losses of an uninterrupted one."""
from __future__ import annotations

import json

import pytest

from dlms import Trainer
from dlms.config import load_config
from tests.conftest import tiny_overrides


def _losses(run_dir) -> dict[int, float]:
    lines = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {l["step"]: l["loss"] for l in lines if "loss" in l}


def test_resume_continues_exactly(tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    Trainer(load_config(None, tiny_overrides(straight, steps=12, **{"train.save_every": 6}))).train()

    broken = tmp_path / "broken"
    trainer = Trainer(load_config(None, tiny_overrides(broken, steps=12, **{"train.save_every": 6})))
    original = Trainer._optimizer_step

    def crash_at_step_9(self):
        if self.step == 8:
            raise KeyboardInterrupt  # the process dies after step 8, two steps past the last save
        return original(self)

    monkeypatch.setattr(Trainer, "_optimizer_step", crash_at_step_9)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    monkeypatch.setattr(Trainer, "_optimizer_step", original)
    assert json.loads((broken / "checkpoint" / "trainer_state.json").read_text())["step"] == 6
    assert max(_losses(broken)) == 8  # steps 7-8 were logged but not saved

    resumed = Trainer.resume(broken)
    assert resumed.step == 6
    resumed.train()
    assert _losses(broken) == _losses(straight)
    assert sorted(_losses(broken)) == list(range(1, 13))


def test_resume_of_a_folder_without_checkpoint_is_a_clear_error(tmp_path):
    from dlms.errors import CheckpointError

    with pytest.raises(CheckpointError, match="no checkpoint"):
        Trainer.resume(tmp_path)
