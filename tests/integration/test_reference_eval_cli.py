"""`dlms eval --references` end to end: tiny ar and masked runs trained on an E2E-like JSONL of
meaning representations and sentences, scored against all references of each validation MR;
the runs that cannot answer prompts get one clear error line."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from dlms.cli import main
from tests.conftest import tiny_overrides

NAMES = ("Eagle", "Mill", "Aromi", "Cotto")
FOODS = ("French", "Thai", "Indian")
AREAS = ("riverside", "city centre")


def _mr_rows() -> list[tuple[str, str]]:
    """12 MRs with 3 references each, every MR's rows together (as scripts/prepare_e2e.py writes them)."""
    rows = []
    for i, name in enumerate(NAMES):
        for food in FOODS:
            area = AREAS[i % 2]
            mr = f"name[{name}], food[{food}], area[{area}]"
            rows += [(mr, f"{name} serves {food} food in the {area} ."),
                     (mr, f"in the {area} , {name} has {food} food ."),
                     (mr, f"{name} is a {food} place .")]
    return rows


ROWS = _mr_rows()
VAL_FRACTION = 0.25  # the last 9 of 36 rows: exactly the last 3 MRs


def _write(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps({"prompt": p, "response": r}) + "\n" for p, r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def e2e_runs(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("e2e-like")
    data = _write(folder / "e2e.jsonl", ROWS)
    runs = {}
    for method in ("ar", "masked"):
        out = folder / f"run-{method}"
        args = tiny_overrides(out, method, 4, **{
            "data.dataset": str(data), "data.format": "prompt_response", "data.seq_len": 64,
            "data.val_fraction": VAL_FRACTION, "train.eval_every": 4, "train.save_every": 4,
            "train.eval_batches": 1, "sample.num_steps": 4})
        assert main(["train", "--samples", "0", *args]) == 0
        runs[method] = out
    return runs


def _eval(capsys, *args: str) -> tuple[dict, list[str]]:
    capsys.readouterr()
    assert main(["eval", "--passes", "0", "--num_samples", "0", *args]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    return json.loads(lines[-1]), lines


def _one_error_line(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:") and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("method", ["ar", "masked"])
def test_references_scores_one_response_per_validation_mr(e2e_runs, method, tmp_path, capsys):
    run = str(e2e_runs[method])
    steps = ["--num_steps", "4"] if method == "masked" else []  # the ar sampler takes no steps
    r, lines = _eval(capsys, "--checkpoint", run, "--references", *steps, "--show", "2")
    val = ROWS[-9:]
    assert r["ref_items"] == 3 and r["ref_references"] == 9  # 3 MRs, each with all 3 of its references
    assert r["ref_source"].startswith("validation split of")
    assert 0 <= r["ref_bleu"] <= 100 and 0 <= r["ref_rougeL"] <= 1 and 0 <= r["ref_rouge1"] <= 1
    assert 0 <= r["ref_slot_coverage"] <= r["ref_slot_recall"] <= 1 and 0 <= r["ref_empty_share"] <= 1
    assert r["ref_reference_slot_coverage"] == pytest.approx(2 / 3)  # "X is a F place ." leaves out the area
    assert r["ref_mean_words"] >= 0
    assert r["ref_reference_mean_words"] == pytest.approx(sum(len(ref.split()) for _, ref in val) / 9)
    assert [ex["prompt"] for ex in r["ref_examples"]] == [val[0][0], val[3][0]]
    assert sum(line.startswith("  prompt: name[") and "  response: " in line for line in lines) == 2
    assert "notes" not in r  # the split keeps every MR on one side

    # The same prompts from a file of prompt/response rows: the same responses, the same figures.
    path = _write(tmp_path / "val.jsonl", val)
    from_file, _ = _eval(capsys, "--checkpoint", run, "--references", str(path), *steps, "--show", "2")
    assert from_file["ref_source"] == str(path)
    assert {k: v for k, v in from_file.items() if k != "ref_source"} == {k: v for k, v in r.items()
                                                                         if k != "ref_source"}
    limited, _ = _eval(capsys, "--checkpoint", run, "--references", str(path), "--num_prompts", "2", *steps,
                       "--show", "0")
    assert limited["ref_items"] == 2 and limited["ref_references"] == 6 and limited["ref_examples"] == []


def test_validation_prompts_also_trained_on_get_a_note(e2e_runs, tmp_path, capsys):
    """Rows of one MR on both sides of the split: their references were trained on, and eval says so."""
    # the last row of MR 8 moved to the end: the validation split (the last 9 rows) now holds MR 8's
    # third reference and MR 9's last two; MRs 10 and 11 stay whole
    straddling = _write(tmp_path / "mixed.jsonl", ROWS[:-10] + ROWS[-9:] + ROWS[-10:-9])
    r, _ = _eval(capsys, "--checkpoint", str(e2e_runs["ar"]), "--references", "--dataset", str(straddling),
                 "--show", "0")
    assert any(note.startswith("2 of 4 validation prompts are training prompts too") for note in r["notes"])


def test_references_on_runs_that_answer_no_prompts_is_one_clear_line(trained_runs, e2e_runs, tmp_path, capsys):
    plain = str(trained_runs["masked"])
    err = _one_error_line(capsys, ["eval", "--checkpoint", plain, "--references", "--passes", "0"])
    assert "--references without a file" in err and "trained on plain text" in err
    assert "--references FILE" in err and "data.format=prompt_response" in err
    rows = _write(tmp_path / "rows.jsonl", ROWS[:3])
    err = _one_error_line(capsys, ["eval", "--checkpoint", plain, "--references", str(rows), "--passes", "0"])
    assert "holds prompt/response rows" in err and "trained on plain text" in err and "--references FILE" in err
    dglm = tmp_path / "dglm-run"
    dglm.mkdir()
    (dglm / "dglm_config.yaml").write_text("{}\n")
    err = _one_error_line(capsys, ["eval", "--checkpoint", str(dglm), "--references"])
    assert "is a DGLM run" in err and "dlms dglm eval" in err and "data.format=prompt_response" in err
    err = _one_error_line(capsys, ["eval", "--checkpoint", str(e2e_runs["ar"]), "--references",
                                   str(tmp_path / "none.jsonl"), "--passes", "0", "--num_samples", "0"])
    assert "none.jsonl" in err and "does not exist" in err
    err = _one_error_line(capsys, ["eval", "--checkpoint", str(e2e_runs["ar"]), "--references",
                                   "--num_prompts", "0", "--passes", "0"])
    assert "--num_prompts" in err


def test_the_data_to_text_bench_reports_every_run_against_the_first(e2e_runs, tmp_path):
    """bench/data_to_text.py: one JSON line per run (BLEU with its standard error, the ratio to the
    first run, length and diversity beside the references'), and the report docs/ is made of."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "report"
    env = {**os.environ, "PYTHONPATH": str(root / "src"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(root / "bench" / "data_to_text.py"), "--runs", str(e2e_runs["ar"]),
                           str(e2e_runs["masked"]), "--sampling", '{"temperature": 0}', "--threads", "1",
                           "--report", str(out), "--first", "2"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["method"] for line in lines] == ["ar", "masked"]
    for line in lines:
        assert line["prompts"] == 3 and line["bleu_se"] >= 0 and 0 <= line["slot_coverage"] <= 1
        assert line["options"]["temperature"] == 0 and line["calls_per_response"] >= 1
        assert line["reference_mean_words"] > 0 and line["reference_entropy"] > 0
    if lines[0]["bleu"] > 0:  # barely trained: the baseline may score 0, and then there is no ratio
        assert lines[0]["bleu_ratio"] == 1.0 and lines[1]["bleu_ratio"] == lines[1]["bleu"] / lines[0]["bleu"]
    else:
        assert lines[0]["bleu_ratio"] is None and lines[1]["bleu_ratio"] is None
    outputs = [json.loads(line) for line in (out / "outputs.jsonl").read_text().splitlines()]
    assert len(outputs) == 6 and all(len(o["references"]) == 3 for o in outputs)
    report = (out / "report.md").read_text()
    assert str(e2e_runs["masked"]) in report and report.count("- reference:") == 2
