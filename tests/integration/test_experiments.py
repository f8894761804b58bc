"""Experiments end to end on tiny models: results.csv, resume after a kill, plots, bad specs."""
from __future__ import annotations

import csv

import pytest
import yaml

from dlms.cli import main
from dlms.errors import ConfigError
from dlms.experiments import load_experiment, run_experiment
from dlms.training import Trainer

TINY_BASE = {
    "model": {"preset": "tiny"},
    "data": {"dataset": "builtin:2000", "vocab_size": 300, "seq_len": 32, "layout": "packed"},
    "train": {"batch_size": 8, "progress": False, "log_every": 5, "warmup_steps": 2, "precision": "fp32"},
}


def write_spec(path, **spec):
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def read_rows(folder):
    with (folder / "results.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_data_scaling_resumes_a_killed_cell_and_skips_finished_ones(tmp_path, monkeypatch):
    out = tmp_path / "ds"
    spec = write_spec(tmp_path / "ds.yaml", experiment="data-scaling", out_dir=str(out), base=TINY_BASE,
                      families=["ar", "masked"], unique_tokens=[1500], total_tokens=12000, evals_per_run=4,
                      final_passes=2)
    real_validate, calls = Trainer.validate, {"n": 0}

    def validate_then_die(self):
        calls["n"] += 1
        if self.method.name == "masked" and calls["n"] > 6:  # the masked cell dies after its second validation
            raise KeyboardInterrupt
        return real_validate(self)

    monkeypatch.setattr(Trainer, "validate", validate_then_die)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(load_experiment(spec), progress=False, log=lambda m: None)
    assert [r["cell"] for r in read_rows(out)] == ["ar-U1500"]  # the finished cell is on disk
    monkeypatch.setattr(Trainer, "validate", real_validate)
    ran = []
    exp = load_experiment(spec)
    original = exp.run_cell
    exp.run_cell = lambda cell, d: ran.append(cell["cell"]) or original(cell, d)
    run_experiment(exp, progress=False, log=lambda m: None)
    assert ran == ["masked-U1500"]  # the AR cell was skipped
    rows = {r["cell"]: r for r in read_rows(out)}
    masked = rows["masked-U1500"]
    assert int(masked["steps"]) == int(rows["ar-U1500"]["steps"]) == 47  # ceil(12000 / (8 * 32))
    # the resumed run logged every validation once: steps strictly increasing, none repeated
    curve = [r for r in csv.DictReader((out / "curves.csv").open()) if r["cell"] == "masked-U1500"]
    steps = [int(r["step"]) for r in curve]
    assert steps == sorted(set(steps)) and steps[-1] == 47
    assert float(masked["best_val_se"]) > 0 and masked["best_val_bound"] == "True"
    assert float(masked["epochs"]) == pytest.approx(47 / int(masked["steps_per_epoch"]), rel=0.01)
    assert (out / "crossover.png").stat().st_size > 1000 and (out / "curves.png").stat().st_size > 1000


def test_sweeps_train_their_model_write_rows_and_redraw_plots(tmp_path, capsys):
    base = {**TINY_BASE, "data": {**TINY_BASE["data"], "layout": "padded", "label_column": "sentiment"},
            "train": {**TINY_BASE["train"], "max_steps": 6, "eval_every": 6, "save_every": 6}}
    gs = write_spec(tmp_path / "gs.yaml", experiment="guidance-sweep", out_dir=str(tmp_path / "gs"), base=base,
                    scales=[1.0, 4.0], samples_per_label=3)
    assert main(["experiment", "guidance-sweep", "--config", str(gs), "--no_progress"]) == 0
    rows = read_rows(tmp_path / "gs")
    assert [float(r["scale"]) for r in rows] == [1.0, 4.0] and all(int(r["samples"]) == 6 for r in rows)
    assert all(0 <= float(r["label_accuracy"]) <= float(r["grammatical"]) <= 1 for r in rows)
    sa = write_spec(tmp_path / "sa.yaml", experiment="sampler-ablation", out_dir=str(tmp_path / "sa"),
                    checkpoint=str(tmp_path / "gs" / "model"), samplers=["ancestral", "confidence", "threshold"], steps=[2, 8],
                    num_samples=4)
    assert main(["experiment", "sampler-ablation", "--config", str(sa), "--no_progress"]) == 0
    rows = read_rows(tmp_path / "sa")
    assert [(r["sampler"], int(r["steps"])) for r in rows][:4] == [("ancestral", 2), ("ancestral", 8),
                                                                   ("confidence", 2), ("confidence", 8)]
    # threshold decides its own steps: one row, with the steps and network calls it took
    assert rows[4]["sampler"] == "threshold" and int(rows[4]["steps"]) >= 1 and int(rows[4]["network_calls"]) >= 1
    assert all(float(r["tokens_per_s"]) > 0 for r in rows)
    # every row carries the samples' length and entropy beside the data's, and the verdict
    for r in rows:
        assert float(r["data_mean_words"]) > 3 and float(r["data_unigram_entropy"]) > 0
        assert float(r["length_gap"]) == pytest.approx(float(r["mean_words"]) / float(r["data_mean_words"]) - 1)
        assert float(r["entropy_gap"]) == pytest.approx(float(r["unigram_entropy"]) / float(r["data_unigram_entropy"]) - 1)
        assert r["at_data_length"] == str(abs(float(r["length_gap"])) <= 0.1 and abs(float(r["entropy_gap"])) <= 0.05)
    report = (tmp_path / "sa" / "report.md").read_text()
    assert " at_data_length |" in report  # a column of the table
    off = [r["cell"] for r in rows if r["at_data_length"] == "False"]
    assert (f"Not at the data's length, so no quality claim: {', '.join(off)}." in report if off
            else "Every row is at the data's length." in report)
    assert "No `gen_ppl`: no evaluator" in report
    assert all("at_data_length" in r for r in read_rows(tmp_path / "gs"))
    for png in ("quality_vs_steps.png", "quality_vs_speed.png"):
        (tmp_path / "sa" / png).unlink()
    capsys.readouterr()
    assert main(["plot", str(tmp_path / "sa")]) == 0
    assert (tmp_path / "sa" / "quality_vs_steps.png").is_file() and "quality_vs_speed.png" in capsys.readouterr().out
    # a second run finds every cell done and trains nothing
    assert main(["experiment", "sampler-ablation", "--config", str(sa), "--no_progress"]) == 0
    assert "5 of 5 cells already" in capsys.readouterr().out


def test_bad_experiment_specs_get_one_clear_error(tmp_path, capsys):
    bad_key = write_spec(tmp_path / "a.yaml", experiment="data-scaling", base=TINY_BASE, epochs=[1])
    with pytest.raises(ConfigError, match="unknown key 'epochs'"):
        load_experiment(bad_key)
    wrong_name = write_spec(tmp_path / "b.yaml", experiment="guidance-sweep", base=TINY_BASE)
    assert main(["experiment", "data-scaling", "--config", str(wrong_name)]) == 2
    assert "describes experiment 'guidance-sweep'" in capsys.readouterr().err
    bad_base = write_spec(tmp_path / "c.yaml", experiment="data-scaling", base={"train": {"batch_sise": 8}})
    with pytest.raises(ConfigError, match="batch_sise"):
        load_experiment(bad_base)
    assert main(["plot", str(tmp_path)]) == 2
    assert "not an experiment folder" in capsys.readouterr().err
    # the model sampled from never scores its own samples
    same = write_spec(tmp_path / "d.yaml", experiment="sampler-ablation", base=TINY_BASE,
                      checkpoint=str(tmp_path / "run"), evaluator=str(tmp_path / "run" / "checkpoint"))
    (tmp_path / "run" / "checkpoint").mkdir(parents=True)
    (tmp_path / "run" / "checkpoint" / "trainer_state.json").write_text("{}")
    assert main(["experiment", "sampler-ablation", "--config", str(same)]) == 2
    assert "own samples" in capsys.readouterr().err
    trained_here = write_spec(tmp_path / "e.yaml", experiment="sampler-ablation", base=TINY_BASE,
                              out_dir=str(tmp_path / "sa"), evaluator=str(tmp_path / "sa" / "model"))
    with pytest.raises(ConfigError, match="own samples"):  # the model it would train, before training it
        load_experiment(trained_here)


def test_data_scaling_sweeps_sizes_and_regularisation_and_compares_the_best_of_each(tmp_path):
    out = tmp_path / "grid"
    sizes = {"xs": {"d_model": 32, "n_layers": 1, "n_heads": 2, "mlp_hidden": 64},
             "s": {"d_model": 64, "n_layers": 2, "n_heads": 2, "mlp_hidden": 128}}
    sweep = {"ar": {"wd0": {"train": {"weight_decay": 0.0}},
                    "reg": {"model": {"dropout": 0.1}, "method": {"input_mask_prob": 0.1}}}}
    spec = write_spec(tmp_path / "grid.yaml", experiment="data-scaling", out_dir=str(out), base=TINY_BASE,
                      families=["ar", "masked"], unique_tokens=[1500], total_tokens=4000, evals_per_run=2,
                      final_passes=2, sizes=sizes, regularisation=sweep)
    exp = load_experiment(spec)
    assert [c["cell"] for c in exp.cells()] == ["ar-xs-wd0-U1500", "ar-xs-reg-U1500", "masked-xs-U1500",
                                                "ar-s-wd0-U1500", "ar-s-reg-U1500", "masked-s-U1500"]
    run_experiment(exp, progress=False, log=lambda m: None)
    rows = {r["cell"]: r for r in read_rows(out)}
    assert rows["ar-xs-reg-U1500"]["variant"] == "reg" and rows["masked-s-U1500"]["variant"] == "none"
    assert int(rows["ar-xs-wd0-U1500"]["parameters"]) < int(rows["ar-s-wd0-U1500"]["parameters"])
    assert float(rows["ar-s-wd0-U1500"]["params_per_unique_token"]) == pytest.approx(
        int(rows["ar-s-wd0-U1500"]["parameters"]) / 1500, abs=0.01)
    saved = yaml.safe_load((out / "runs" / "ar-xs-reg-U1500" / "config.yaml").read_text())
    assert saved["model"]["dropout"] == 0.1 and saved["method"]["input_mask_prob"] == 0.1
    assert saved["model"]["d_model"] == 32
    report = (out / "report.md").read_text()
    for size in ("xs", "s"):
        best_ar = min((r for r in rows.values() if r["family"] == "ar" and r["size"] == size),
                      key=lambda r: float(r["best_val_loss"]))
        assert f"| {size} | 1,500 |" in report and f"ar ({best_ar['variant']})" in report
    assert "Regularisation swept per family: ar: wd0, reg" in report
    assert (out / "crossover.png").stat().st_size > 1000 and (out / "curves.png").stat().st_size > 1000
    # one budget cannot separate the scaling law from the half-life: said, per family and size
    assert "## Data reuse and the crossover compute" in report and (out / "data_reuse.png").stat().st_size > 1000
    for size in ("xs", "s"):
        for family in ("ar", "masked"):
            assert f"| {size} | {family} | | | | | not fitted: fewer than two budgets" in report


@pytest.mark.parametrize("sweep, message", [
    ({"gaussian": {"a": {}}}, "regularisation: 'gaussian' must be one of the families"),
    ({"ar": {}}, "regularisation: 'ar' must be one of the families"),
    ({"ar": {"a-b": {}}}, None)])
def test_a_bad_sweep_is_one_config_error(tmp_path, sweep, message):
    spec = write_spec(tmp_path / "bad.yaml", experiment="data-scaling", base=TINY_BASE, unique_tokens=[1500],
                      regularisation=sweep, sizes={} if message else {"x-y": {}})
    with pytest.raises(ConfigError, match=message or "must map names \\(without '-'\\)"):
        load_experiment(spec).cells()
