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


def test_resume_repairs_a_torn_metrics_line_and_removes_leftovers(tmp_path, capsys):
    from dlms.cli import main

    run = tmp_path / "run"
    assert main(["train", "--samples", "0", *tiny_overrides(run, steps=8, **{"train.progress": True})]) == 0
    (run / ".checkpoint.tmp-99999").mkdir()  # a save killed half way
    (run / ".checkpoint.tmp-99999" / "model.safetensors").write_bytes(b"partial")
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"step": 9, "lo')  # a write killed half way
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--max_steps", "10", "--samples", "0"]) == 0
    err = capsys.readouterr().err
    assert "dropped 1 unreadable line" in err and ".checkpoint.tmp-99999" in err
    assert not (run / ".checkpoint.tmp-99999").exists()
    assert sorted(_losses(run)) == list(range(1, 11))


def test_training_into_a_run_needs_resume_or_overwrite(tmp_path, capsys):
    from dlms.cli import main

    run = tmp_path / "run"
    assert main(["train", "--samples", "0", *tiny_overrides(run, steps=4)]) == 0
    first = (run / "checkpoint" / "model.safetensors").read_bytes()
    assert main(["train", "--samples", "0", *tiny_overrides(run, steps=2)]) == 2
    assert "already holds a run at step 4 of 4" in capsys.readouterr().err
    assert (run / "checkpoint" / "model.safetensors").read_bytes() == first
    assert main(["train", "--samples", "0", "--overwrite", *tiny_overrides(run, steps=2)]) == 0
    assert sorted(_losses(run)) == [1, 2]  # the old run's metrics went with it
    assert json.loads((run / "checkpoint" / "trainer_state.json").read_text())["step"] == 2


def test_the_python_api_also_refuses_to_overwrite(tmp_path):
    from dlms.errors import ConfigError

    run = tmp_path / "run"
    Trainer(load_config(None, tiny_overrides(run, steps=2))).train()
    with pytest.raises(ConfigError, match="already holds"):
        Trainer(load_config(None, tiny_overrides(run, steps=2)))
    Trainer(load_config(None, tiny_overrides(run, steps=3)), overwrite=True).train()
    assert sorted(_losses(run)) == [1, 2, 3]


def test_the_saved_config_records_the_resolved_precision(tmp_path):
    import yaml

    run = tmp_path / "run"
    Trainer(load_config(None, tiny_overrides(run, steps=1, **{"train.precision": "auto"}))).train()
    saved = yaml.safe_load((run / "checkpoint" / "config.yaml").read_text())
    assert saved["train"]["precision"] in ("bf16", "fp32")
