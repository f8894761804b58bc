"""`dlms eval` end to end on tiny runs: every figure family, files written, batch-size invariance."""
from __future__ import annotations

import json

import pytest

from dlms.cli import main


def run_eval(capsys, *args) -> dict:
    capsys.readouterr()
    assert main(["eval", *args]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_eval_reports_both_bounds_and_every_generation_figure(trained_runs, tmp_path, capsys):
    masked, ar = str(trained_runs["masked"]), str(trained_runs["ar"])
    out = tmp_path / "report" / "masked.json"
    r = run_eval(capsys, "--checkpoint", masked, "--evaluator", ar, "--passes", "4", "--max_sequences", "16",
                 "--discrete_steps", "4", "--num_samples", "12", "--mauve", "--output", str(out))
    assert r["evaluator"] == ar and len(r["examples"]) == 5  # five samples shown unless --show says otherwise
    assert r["text_end"] in ("drawn", "frontier")  # what `auto` picked, not "auto"
    assert r["val_bound"] is True and r["val_discrete_steps"] == 4
    assert r["val_se"] > 0 and r["val_discrete_se"] > 0
    # four steps is a coarse grid: its bound sits above the continuous one
    assert r["val_discrete_nll"] > r["val_nll"]
    for key in ("unigram_entropy", "distinct_1", "distinct_2", "distinct_3", "self_bleu", "gen_ppl", "mauve",
                "grammatical"):
        assert key in r, key
    assert 0 <= r["mauve"] <= 1 and r["gen_ppl"] > 1 and 0 <= r["self_bleu"] <= 100
    assert json.loads(out.read_text())["val_nll"] == r["val_nll"]
    assert "| val_discrete_nll |" in out.with_suffix(".md").read_text()
    # every quality figure beside the samples' length and diversity and the data's own
    for key in ("mean_words", "empty_share", "data_mean_words", "data_unigram_entropy", "length_gap", "entropy_gap",
                "at_data_length", "data_samples"):
        assert key in r, key
    assert r["data_mean_words"] > 3 and r["data_unigram_entropy"] > 0
    assert r["length_gap"] == pytest.approx(r["mean_words"] / r["data_mean_words"] - 1)
    assert r["entropy_gap"] == pytest.approx(r["unigram_entropy"] / r["data_unigram_entropy"] - 1)
    assert r["at_data_length"] is (abs(r["length_gap"]) <= 0.1 and abs(r["entropy_gap"]) <= 0.05)
    assert "| at_data_length |" in out.with_suffix(".md").read_text()


def test_eval_shows_n_samples_and_never_scores_a_model_by_itself(trained_runs, capsys):
    """--show N prints N samples; an AR run evaluated without an evaluator gets no gen_ppl (it would
    be its own judge) and a note that says so."""
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(trained_runs["ar"]), "--passes", "0", "--num_samples", "9",
                 "--show", "7"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    r = json.loads(lines[-1])
    shown = [line for line in lines if line.startswith("  sample: ")]
    assert len(shown) == 7 and len(r["examples"]) == 7 and r["samples"] == 9
    assert "gen_ppl" not in r and "evaluator" not in r
    assert any(line.startswith("note: no gen_ppl") for line in lines)
    assert any(note.startswith("no gen_ppl") for note in r["notes"])
    assert ("| at_data_length | False |" in lines) == any(n.startswith("not at the data's length") for n in r["notes"])


def test_eval_likelihood_does_not_depend_on_batch_size(trained_runs, capsys):
    for run in trained_runs.values():
        args = ["--checkpoint", str(run), "--passes", "3", "--max_sequences", "10", "--num_samples", "0"]
        a = run_eval(capsys, *args, "--batch_size", "3")
        b = run_eval(capsys, *args, "--batch_size", "8")
        assert a["val_nll"] == pytest.approx(b["val_nll"], rel=1e-5) and a["val_se"] == pytest.approx(b["val_se"], rel=1e-4)
        if "val_discrete_nll" in a:
            assert a["val_discrete_nll"] == pytest.approx(b["val_discrete_nll"], rel=1e-5)


def test_eval_runs_reference_and_multiple_choice_tasks(trained_runs, tmp_path, capsys):
    refs = tmp_path / "refs.jsonl"
    refs.write_text("".join(json.dumps({"prompt": p, "references": [p + " was good ."]}) + "\n"
                            for p in ("the chef", "the pizza", "my friend")), encoding="utf-8")
    mc = tmp_path / "mc.jsonl"
    mc.write_text("".join(json.dumps({"question": q, "choices": ["delicious .", "fast cars fly"], "answer": "A"}) + "\n"
                          for q in ("the pizza was", "the soup was")), encoding="utf-8")
    for method, run in trained_runs.items():
        r = run_eval(capsys, "--checkpoint", str(run), "--passes", "0", "--num_samples", "0", "--references", str(refs),
                     "--multiple_choice", str(mc))
        assert r["ref_items"] == 3 and 0 <= r["ref_bleu"] <= 100 and 0 <= r["ref_rouge1"] <= 1
        assert r["mc_items"] == 2 and r["mc_acc"] in (0.0, 0.5, 1.0)
        assert r["mc_likelihood"] == ("exact" if method == "ar" else "elbo")
        assert "val_nll" not in r and "samples" not in r


def test_eval_bad_inputs_get_one_line(trained_runs, tmp_path, capsys):
    masked = str(trained_runs["masked"])
    assert main(["eval", "--checkpoint", masked, "--passes", "0", "--num_samples", "4", "--mauve"]) == 2
    assert "MAUVE needs features from an evaluator" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", masked, "--evaluator", masked, "--passes", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1
    assert main(["eval", "--checkpoint", masked, "--multiple_choice", str(tmp_path / "none.jsonl")]) == 2
    assert "none.jsonl" in capsys.readouterr().err
