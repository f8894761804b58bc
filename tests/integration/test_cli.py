"""The command line end to end on the built-in corpus: train, generate, view, eval."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from dlms.cli import main


def test_train_writes_a_self_describing_run(trained_runs):
    run = trained_runs["masked"]
    ckpt = run / "checkpoint"
    for name in ("config.yaml", "model.safetensors", "optimizer.pt", "trainer_state.json", "tokenizer/tokenizer.json"):
        assert (ckpt / name).is_file(), name
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert state["method"] == "masked" and state["step"] == 16
    lines = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    train_steps = [l["step"] for l in lines if "loss" in l]
    assert train_steps == list(range(1, 17))
    assert any("val_nll" in l for l in lines)
    assert all(l["tokens_per_s"] > 0 for l in lines if "loss" in l)


def test_generate_keeps_the_prompt_and_shows_steps(trained_runs, capsys):
    run = trained_runs["masked"]
    code = main(["generate", "--checkpoint", str(run), "--prompt", "the chef", "--seq_len", "16", "--num_steps", "4",
                 "--num_samples", "2", "--show_steps", "--step_interval", "2", "--seed", "1"])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    step_lines = [l for l in out if l.startswith("[step")]
    assert [l.split("]")[0] for l in step_lines] == ["[step    2/4", "[step    2/4", "[step    4/4", "[step    4/4"]
    samples = [l for l in out if not l.startswith("[step")]
    assert len(samples) == 2 and all(s.startswith("the chef") for s in samples)


def test_generate_is_reproducible_by_seed(trained_runs, capsys):
    args = ["generate", "--checkpoint", str(trained_runs["ar"]), "--num_samples", "3", "--seq_len", "16"]
    main(args + ["--seed", "3"])
    first = capsys.readouterr().out
    main(args + ["--seed", "3"])
    assert capsys.readouterr().out == first
    main(args + ["--seed", "4"])
    assert capsys.readouterr().out != first


def test_view_shows_noise_turning_into_text(trained_runs, capsys):
    assert main(["view", "--checkpoint", str(trained_runs["masked"]), "--steps", "5", "--seq_len", "8"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("step   0/5") and lines[-1].startswith("final")
    assert len(lines) == 7
    masks = [l.count(" _") for l in lines[:-1]]
    assert masks[0] == 7  # every position but the start token
    assert masks == sorted(masks, reverse=True) and masks[-1] == 0


def test_eval_reports_bound_and_generation_figures(trained_runs, tmp_path, capsys):
    out_file = tmp_path / "eval.json"
    code = main(["eval", "--checkpoint", str(trained_runs["masked"]), "--ar_checkpoint", str(trained_runs["ar"]),
                 "--passes", "4", "--num_samples", "4", "--max_sequences", "8", "--output", str(out_file)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| val_nll |" in printed
    results = json.loads(out_file.read_text())
    assert results["method"] == "masked" and results["val_bound"] is True
    assert results["val_se"] > 0 and results["val_passes"] == 4
    assert results["val_nll"] > 0 and results["gen_ppl"] > 1
    assert 0 <= results["grammatical"] <= 1 and results["unigram_entropy"] > 0
    # quality beside the length it was measured at, and the data's own length
    words = [len(t.split()) for t in results["examples"]]  # all 4 samples
    assert len(words) == 4 and results["mean_words"] == sum(words) / 4
    assert results["empty_share"] == sum(w == 0 for w in words) / 4
    assert results["data_mean_words"] > 3  # the built-in corpus's reviews


def test_one_pass_has_no_standard_error(trained_runs, capsys):
    assert main(["eval", "--checkpoint", str(trained_runs["masked"]), "--passes", "1", "--num_samples", "0",
                 "--max_sequences", "8"]) == 0
    results = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert results["val_se"] is None and results["val_discrete_se"] is None


def test_eval_of_ar_is_exact(trained_runs, capsys):
    assert main(["eval", "--checkpoint", str(trained_runs["ar"]), "--num_samples", "0", "--max_sequences", "8"]) == 0
    results = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert results["val_bound"] is False and results["val_se"] == 0.0


def test_console_script_runs_as_a_separate_process(trained_runs):
    """The installed `dlms` entry point (here via `python -m dlms.cli`) and its exit codes."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    ok = subprocess.run([sys.executable, "-m", "dlms.cli", "generate", "--checkpoint", str(trained_runs["ar"]),
                         "--num_samples", "1", "--seq_len", "12"], capture_output=True, text=True, env=env)
    assert ok.returncode == 0 and ok.stdout.strip()
    bad = subprocess.run([sys.executable, "-m", "dlms.cli", "generate", "--checkpoint", "/no/such/run"],
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 2
    assert bad.stderr.strip().startswith("error:") and "Traceback" not in bad.stderr
