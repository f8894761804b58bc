"""scripts/prepare_e2e.py: prompt/response rows whose tail split holds whole meaning representations."""
from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from dlms.data.builder import split_mask

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "prepare_e2e.py"


def _script():
    spec = importlib.util.spec_from_file_location("prepare_e2e", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("sizes, target", [([4, 6, 5, 7, 2], 9), ([6, 6, 4, 5], 10), ([3, 3, 3], 6), ([5, 4], 4)])
def test_pick_validation_adds_up_to_exactly_the_target(sizes, target):
    chosen = _script().pick_validation(sizes, target)
    assert sum(sizes[i] for i in chosen) == target


def test_pick_validation_that_cannot_is_one_error():
    with pytest.raises(SystemExit, match="no set of whole MRs has exactly 5 rows"):
        _script().pick_validation([4, 4, 4], 5)


def test_the_builder_split_of_the_output_keeps_every_mr_on_one_side(tmp_path):
    rows = [(f"name[Place {i}], food[{food}]", f"Place {i} serves {food} food ({k}).")
            for i, food in enumerate(["French", "Thai", "Indian"] * 4) for k in range(3 + i % 4)]
    source = tmp_path / "dev.csv"
    with source.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["mr", "ref"])
        writer.writerows(rows)
    done = subprocess.run([sys.executable, str(SCRIPT), str(source), str(tmp_path / "out"), "--val_fraction", "0.2"],
                          capture_output=True, text=True, check=True)
    summary = json.loads(done.stdout)
    written = [json.loads(line) for line in (tmp_path / "out" / "e2e.jsonl").read_text().splitlines()]
    val = [json.loads(line) for line in (tmp_path / "out" / "val.jsonl").read_text().splitlines()]
    assert sorted((r["prompt"], r["response"]) for r in written) == sorted(rows)
    held = split_mask(len(written), 0.2, "tail", 0)
    assert [r for r, h in zip(written, held) if h] == val and summary["val_rows"] == len(val) == held.sum()
    train_mrs = {r["prompt"] for r, h in zip(written, held) if not h}
    assert train_mrs and not train_mrs & {r["prompt"] for r in val}


def test_a_csv_without_the_columns_is_one_error_line(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("meaning,text\na,b\n", encoding="utf-8")
    done = subprocess.run([sys.executable, str(SCRIPT), str(bad), str(tmp_path / "out")], capture_output=True,
                          text=True)
    assert done.returncode != 0 and done.stderr.strip() == f"error: '{bad}' has no column(s) mr, ref; pass a CSV " \
                                                           "with columns mr,ref"
