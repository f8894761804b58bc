"""`dlms distill` through the real command line on tiny runs: a student that loads and samples
like any run, exact resume after an interrupted round, gaussian progressive distillation, and
one clear error line for each bad input."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dlms.cli import main
from dlms.training import Trainer
from tests.conftest import tiny_overrides


def _losses(run: Path) -> dict[int, float]:
    lines = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    return {l["step"]: l["loss"] for l in lines if "loss" in l}


def test_one_round_writes_a_student_that_loads_and_samples_with_half_the_steps(trained_runs, tmp_path):
    from dlms import DiffusionLM

    teacher, out = trained_runs["masked"], tmp_path / "student"
    assert main(["distill", "--checkpoint", str(teacher), "--steps", "4", "--max_steps", "4", "--out_dir", str(out),
                 "--no_progress"]) == 0
    lm = DiffusionLM.load_checkpoint(out)
    assert lm.cfg.sample.num_steps == 4  # the teacher's 8, halved
    assert lm.cfg.distill.teacher == str(teacher.resolve()) and lm.cfg.distill.objective == "sdtt"
    assert (lm.cfg.distill.teacher_steps, lm.cfg.distill.round, lm.cfg.distill.rounds) == (8, 1, 1)
    texts = lm.sample(num_samples=2, seed=0)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    before = load_file(str(teacher / "checkpoint" / "model.safetensors"))
    after = load_file(str(out / "checkpoint" / "model.safetensors"))
    assert before.keys() == after.keys() and any(not torch.equal(before[k], after[k]) for k in before)
    assert (out / "round-1" / "checkpoint").is_dir() and sorted(_losses(out)) == [1, 2, 3, 4]


def test_an_interrupted_distillation_resumes_where_it_stopped(trained_runs, tmp_path, monkeypatch):
    teacher = str(trained_runs["masked"])
    args = ["distill", "--checkpoint", teacher, "--steps", "2", "--max_steps", "12", "--no_progress"]
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    assert main([*args, "--out_dir", str(straight)]) == 0  # 8 -> 4 -> 2: two rounds of 12 steps

    original = Trainer._optimizer_step

    def die_in_round_2_at_step_10(self):
        if self.run_dir.name == "round-2" and self.step == 9:
            raise KeyboardInterrupt  # the last save was at step 8 (save_every 8)
        return original(self)

    monkeypatch.setattr(Trainer, "_optimizer_step", die_in_round_2_at_step_10)
    assert main([*args, "--out_dir", str(broken)]) == 130
    monkeypatch.setattr(Trainer, "_optimizer_step", original)
    round_1 = (broken / "round-1" / "checkpoint" / "model.safetensors").read_bytes()
    assert json.loads((broken / "round-2" / "checkpoint" / "trainer_state.json").read_text())["step"] == 8
    assert not (broken / "checkpoint").exists()  # no final student yet

    assert main([*args, "--out_dir", str(broken)]) == 2  # never silently restarted or overwritten
    assert main([*args, "--out_dir", str(broken), "--resume"]) == 0
    assert (broken / "round-1" / "checkpoint" / "model.safetensors").read_bytes() == round_1  # skipped
    for name in ("round-1", "round-2", "."):
        assert _losses(broken / name) == _losses(straight / name)  # continued exactly, not restarted
    assert sorted(_losses(broken / "round-2")) == list(range(1, 13))


@pytest.fixture(scope="module")
def gaussian_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("gaussian") / "run"
    assert main(["train", "--samples", "0", *tiny_overrides(run, "gaussian", steps=8)]) == 0
    return run


def test_gaussian_progressive_distillation(gaussian_run, tmp_path):
    from dlms import DiffusionLM
    from dlms.distill import ProgressiveObjective
    from dlms.distill.rounds import load_frozen

    # By hand: with one teacher sub-step the target is the teacher's own x0 estimate, so a
    # student equal to its teacher has (almost) zero loss; with two sub-steps it has more.
    _, method, model, _ = load_frozen(gaussian_run, torch.device("cpu"))
    batch = {"input_ids": torch.randint(4, 300, (4, 32))}
    torch.manual_seed(0)
    one = ProgressiveObjective(method, model, student_steps=4, substeps=1)(model, batch)
    torch.manual_seed(0)
    two = ProgressiveObjective(method, model, student_steps=4, substeps=2)(model, batch)
    assert one.metrics["kl"] < 1e-5 and one.metrics["mse"] < 1e-6
    assert two.metrics["mse"] > 100 * one.metrics["mse"] + 1e-7

    out = tmp_path / "student"
    assert main(["distill", "--checkpoint", str(gaussian_run), "--steps", "4", "--max_steps", "3", "--out_dir",
                 str(out), "--no_progress"]) == 0
    lm = DiffusionLM.load_checkpoint(out)
    assert lm.cfg.sample.num_steps == 4 and lm.cfg.distill.objective == "progressive"
    assert lm.cfg.method.freeze_embeddings  # the diffusion space (the token table) is the teacher's
    teacher_w = load_file(str(gaussian_run / "checkpoint" / "model.safetensors"))
    student_w = load_file(str(out / "checkpoint" / "model.safetensors"))
    assert torch.equal(teacher_w["token_table.weight"], student_w["token_table.weight"])
    assert len(lm.sample(num_samples=2, seed=0)) == 2


def _dglm_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "dglm"
    folder.mkdir()
    (folder / "dglm_config.yaml").write_text("{}\n")
    return folder


@pytest.mark.parametrize("case, said", [
    ("ar", "is a 'ar' run, which cannot be distilled"),
    ("dglm", "is a DGLM run, which cannot be distilled"),
    ("missing", "does not exist"),
    ("steps_too_many", "--steps (8) must be smaller than the teacher's 8 sampling steps"),
    ("steps_unreachable", "--steps (3) does not divide the teacher's 8 sampling steps; halving 8 reaches 4, 2, 1"),
    ("not_halving", "--steps (4) is not reached from the teacher's 12 sampling steps by halving (halving reaches 6, 3)"),
    ("nothing_to_resume", "holds no distillation to resume; run without --resume"),
    ("out_is_teacher", "holds the teacher run"),
])
def test_bad_input_is_one_error_line(case, said, trained_runs, tmp_path, capsys):
    run = str(trained_runs["masked"])
    args = {
        "ar": ["--checkpoint", str(trained_runs["ar"]), "--steps", "4"],
        "dglm": ["--checkpoint", str(_dglm_folder(tmp_path)) if case == "dglm" else "", "--steps", "4"],
        "missing": ["--checkpoint", str(tmp_path / "nope"), "--steps", "4"],
        "steps_too_many": ["--checkpoint", run, "--steps", "8"],
        "steps_unreachable": ["--checkpoint", run, "--steps", "3"],
        "not_halving": ["--checkpoint", run, "--steps", "4", "--teacher_steps", "12"],
        "nothing_to_resume": ["--checkpoint", run, "--steps", "4", "--resume"],
        "out_is_teacher": ["--checkpoint", run, "--steps", "4", "--out_dir", run],
    }[case]
    if "--out_dir" not in args:
        args += ["--out_dir", str(tmp_path / "out")]
    capsys.readouterr()
    assert main(["distill", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and said in err[0], err
    assert not (tmp_path / "out" / "distill.json").exists()
