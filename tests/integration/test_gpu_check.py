"""`bench/gpu_check.py` dry run on the CPU: every method family trains in bf16, resumes, samples
and evaluates, and reports finite numbers as JSON lines (DGLM is left out: it takes ~30 s)."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "gpu_check.py"
NUMBERS = ("parameters", "train_tokens_per_s", "flops_per_token", "achieved_tflops", "mfu", "counted_flops_per_token",
           "counted_tflops", "mfu_counted", "sample_tokens_per_s", "val_nll", "elapsed_s")


def dry_run(tmp_path: Path, *args: str, timeout: float = 100) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    env.setdefault("DLMS_CACHE_DIR", str(tmp_path / "cache"))
    return subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--tiny", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpu-check")
    proc = dry_run(tmp, "--families", "masked,ar,gaussian", "--budget_s", "90", "--work_dir", str(tmp / "work"))
    lines = [json.loads(line) for line in proc.stdout.splitlines()]  # every stdout line is JSON
    return proc, lines, tmp / "work"


def test_dry_run_reports_every_family_ok_with_finite_numbers(report):
    proc, lines, _ = report
    assert proc.returncode == 0, proc.stderr[-2000:]
    header, families = lines[0], {line["family"]: line for line in lines[1:]}
    assert header["check"] == "gpu_check" and header["ok"] is True and header["bf16_matmul_tflops"] > 0
    assert sorted(families) == ["ar", "gaussian", "masked"] and len(lines) == 4
    for name, line in families.items():
        assert line["ok"] is True, line
        assert line["resume_ok"] is True and line["resume_steps"] == [line["steps"], line["steps"] + 2]
        assert line["precision"] == "bf16" and line["sample_precision"] == "bf16" and line["device"] == "cpu"
        for key in NUMBERS:
            assert isinstance(line[key], (int, float)) and math.isfinite(line[key]) and line[key] > 0, (name, key)
        assert math.isclose(line["mfu"], line["achieved_tflops"] / header["bf16_matmul_tflops"], rel_tol=0.01)
    # 6N + 12 L d T, and the self-conditioning forward on half of gaussian's steps.
    ar = families["ar"]
    assert ar["flops_per_token"] == 6 * ar["parameters"] + 12 * ar["n_layers"] * ar["d_model"] * ar["seq_len"]
    g = families["gaussian"]
    g_formula = 6 * g["parameters"] + 12 * g["n_layers"] * g["d_model"] * g["seq_len"]
    assert g["flops_per_token"] == int(g_formula * (1 + 0.5 / 3))
    # The counted FLOPs agree with the formula where every parameter acts on every token (ar: a
    # row of seq_len - 1 predictions), and are lower for gaussian, whose time conditioning acts per row.
    assert 0.75 < ar["counted_flops_per_token"] / ar["flops_per_token"] < 1.05
    assert g["counted_flops_per_token"] < g["flops_per_token"]
    from dlms.samplers import SAMPLERS

    masked_samplers = {n for n in SAMPLERS.names() if "masked" in SAMPLERS.get(n).method_names}
    assert set(families["masked"]["sampler_tokens_per_s"]) == masked_samplers
    assert set(g["sampler_tokens_per_s"]) == {"ddpm", "ddim"} and families["masked"]["masks_left"] == 0


def test_each_family_left_a_resumed_run_and_the_ar_bound_is_exact(report):
    _, lines, work = report
    for family in ("masked", "ar", "gaussian"):
        assert (work / family / "config.yaml").is_file()
    families = {line["family"]: line for line in lines[1:]}
    assert families["ar"]["val_bound"] is False and families["masked"]["val_bound"] is True


def test_an_expected_failure_is_one_json_line_per_family_and_a_non_zero_exit(tmp_path):
    # No CUDA here: with the start method used on a GPU (spawn), the header and the family say so
    # in one line each, DGLM says why it was skipped, and nothing like a traceback is printed.
    proc = dry_run(tmp_path, "--device", "cuda", "--start_method", "spawn", "--families", "masked,dglm")
    assert proc.returncode == 1
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    header, families = lines[0], {line["family"]: line for line in lines[1:]}
    assert header["ok"] is False and "no CUDA GPU" in header["error"] and header["torch"]
    assert families["masked"]["ok"] is False and "no CUDA GPU" in families["masked"]["error"]
    assert "ar" in families["dglm"]["skipped"] and "ok" not in families["dglm"]  # a skip is not a failure
    assert "Traceback" not in proc.stdout + proc.stderr


def test_a_spent_budget_still_reports_every_family(tmp_path):
    proc = dry_run(tmp_path, "--families", "masked,ar", "--budget_s", "0", "--start_method", "spawn", timeout=60)
    assert proc.returncode == 1
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert lines[0]["ok"] is False and "timed out" in lines[0]["error"]
    assert [(x["family"], x["ok"]) for x in lines[1:]] == [("masked", False), ("ar", False)]
    assert all("budget" in x["error"] for x in lines[1:])
