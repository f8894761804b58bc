"""Bad input, as a table: every case is one command a user could type. Each must end with exit
status 2, exactly one `error:` line on stderr that names the problem, no traceback, and a run
already trained next to it left byte for byte as it was."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dlms.cli import main
from tests.conftest import tiny_overrides

TRAIN = ["train", "--samples", "0", *tiny_overrides("{tmp}/r")]


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder` (the lock file's holder pid aside: bookkeeping, not data)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


@pytest.fixture(scope="module")
def guarded(trained_runs, tmp_path_factory) -> Path:
    """A finished run that no case may change."""
    run = tmp_path_factory.mktemp("guarded") / "run"
    shutil.copytree(trained_runs["masked"], run)
    return run


# ---------------------------------------------------------------- set-ups: files a case needs


def _empty_file(ctx):
    (ctx["tmp"] / "empty.txt").write_text("\n\n")


def _binary_file(ctx):
    (ctx["tmp"] / "weights.txt").write_bytes(bytes(range(256)) * 10)


def _a_file(ctx):
    (ctx["tmp"] / "a-file").write_text("not a folder")


def _read_only_dir(ctx):
    folder = ctx["tmp"] / "read-only"
    folder.mkdir()
    folder.chmod(0o500)


def _copy(ctx, name: str) -> Path:
    dest = ctx["tmp"] / name
    shutil.copytree(ctx["run"], dest)
    return dest


def _damaged_weights(ctx):
    weights = _copy(ctx, "damaged") / "checkpoint" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])


def _state_without_step(ctx):
    state_file = _copy(ctx, "no-step") / "checkpoint" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    del state["step"]
    state_file.write_text(json.dumps(state))


def _wrong_shaped_optimizer(ctx):
    opt_file = _copy(ctx, "bad-optimizer") / "checkpoint" / "optimizer.pt"
    state = torch.load(opt_file, weights_only=True)
    first = next(iter(state["optimizer"]["state"].values()))
    first["exp_avg"] = torch.zeros(3, 3)
    first["exp_avg_sq"] = torch.zeros(3, 3)
    torch.save(state, opt_file)


def _nan_weights(ctx):
    from safetensors.torch import save_file

    weights = _copy(ctx, "nan-weights") / "checkpoint" / "model.safetensors"
    tensors = load_file(str(weights))
    first = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[first] = torch.full_like(tensors[first], float("nan"))
    save_file(tensors, str(weights))


def _bad_yaml_type(ctx):
    (ctx["tmp"] / "bad.yaml").write_text("train:\n  batch_size: many\n")


def _bad_yaml_section(ctx):
    (ctx["tmp"] / "bad.yaml").write_text("trainer:\n  batch_size: 4\n")


def _broken_yaml(ctx):
    (ctx["tmp"] / "bad.yaml").write_text("train: [unclosed\n")


def _lock_the_run(ctx):
    import fcntl

    fd = os.open(ctx["run"] / ".lock", os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a training in another process would
    ctx["cleanup"].append(lambda: os.close(fd))


def _no_gpu(ctx):
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")


def _not_root(ctx):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    _read_only_dir(ctx)


def _cache_is_a_file(ctx):
    (ctx["tmp"] / "cache-file").write_text("")
    ctx["env"]["DLMS_CACHE_DIR"] = str(ctx["tmp"] / "cache-file")


def _text_data(ctx):
    (ctx["tmp"] / "data.txt").write_text("the cat sat on the mat.\n" * 50)


# ---------------------------------------------------------------- the table
# (id, argv with {tmp} / {run} / {ar} placeholders, words the error must contain, set-up or None)
CASES = [
    # config values of the right type but out of range (each would train silently wrong)
    ("grad-clip-negative", [*TRAIN, "train.grad_clip=-1"], ["train.grad_clip", "positive"], None),
    ("min-lr-ratio-above-one", [*TRAIN, "train.min_lr_ratio=5"], ["train.min_lr_ratio", "[0, 1]"], None),
    ("warmup-negative", [*TRAIN, "train.warmup_steps=-5"], ["train.warmup_steps", "at least 0"], None),
    ("val-fraction-zero", [*TRAIN, "data.val_fraction=0"], ["data.val_fraction", "(0, 1)"], None),
    ("eval-batches-zero", [*TRAIN, "train.eval_batches=0"], ["train.eval_batches", "at least 1"], None),
    ("beta1-above-one", [*TRAIN, "train.beta1=2"], ["train.beta1", "[0, 1)"], None),
    ("beta2-one", [*TRAIN, "train.beta2=1"], ["train.beta2", "[0, 1)"], None),
    ("weight-decay-negative", [*TRAIN, "train.weight_decay=-0.1"], ["train.weight_decay", "at least 0"], None),
    ("heads-do-not-divide", [*TRAIN, "model.n_heads=3"], ["model.n_heads", "model.d_model"], None),
    ("d-model-zero", [*TRAIN, "model.d_model=0"], ["model.d_model", "at least 1"], None),
    ("batch-size-zero", [*TRAIN, "--batch_size", "0"], ["train.batch_size", "at least 1"], None),
    ("learning-rate-zero", [*TRAIN, "train.learning_rate=0"], ["train.learning_rate", "positive"], None),
    ("learning-rate-nan", [*TRAIN, "train.learning_rate=.nan"], ["train.learning_rate", "finite"], None),
    ("learning-rate-inf", [*TRAIN, "train.learning_rate=.inf"], ["train.learning_rate", "finite"], None),
    ("max-steps-zero", [*TRAIN, "--max_steps", "0"], ["train.max_steps", "at least 1"], None),
    ("seed-negative", [*TRAIN, "--seed", "-1"], ["train.seed", "at least 0"], None),
    ("sample-temperature-negative", [*TRAIN, "sample.temperature=-1"], ["sample.temperature", "at least 0"], None),
    ("sample-top-p-zero", [*TRAIN, "sample.top_p=0"], ["sample.top_p", "(0, 1]"], None),
    ("sample-top-k-negative", [*TRAIN, "sample.top_k=-1"], ["sample.top_k", "at least 0"], None),
    ("seq-len-tiny", [*TRAIN, "--seq_len", "2"], ["data.seq_len", "at least 4"], None),
    ("ema-decay-one", [*TRAIN, "train.ema_decay=1"], ["train.ema_decay", "[0, 1)"], None),
    ("eta-above-one", [*TRAIN, "sample.eta=2"], ["sample.eta", "[0, 1]"], None),
    # config keys, types and files
    ("unknown-key", [*TRAIN, "train.batch_sise=4"], ["train.batch_sise", "batch_size"], None),
    ("wrong-type-override", [*TRAIN, "train.batch_size=many"], ["train.batch_size", "int"], None),
    ("wrong-type-yaml", ["train", "--config", "{tmp}/bad.yaml"], ["train.batch_size", "int"], _bad_yaml_type),
    ("unknown-section-yaml", ["train", "--config", "{tmp}/bad.yaml"], ["trainer"], _bad_yaml_section),
    ("broken-yaml", ["train", "--config", "{tmp}/bad.yaml"], ["not valid YAML"], _broken_yaml),
    ("missing-config", ["train", "--config", "{tmp}/nope.yaml"], ["nope.yaml", "does not exist"], None),
    ("precision-fp16", [*TRAIN, "train.precision=fp16"], ["train.precision", "bf16"], None),
    ("unknown-method", [*TRAIN, "--method", "diffusion"], ["method.name", "masked"], None),
    ("unknown-schedule", [*TRAIN, "method.schedule=nope"], ["schedule", "nope"], None),
    ("schedule-of-another-kind", [*TRAIN, "--method", "gaussian", "method.schedule=loglinear"],
     ["loglinear", "gaussian"], None),
    ("override-without-equals", [*TRAIN, "train.batch_size"], ["train.batch_size", "section.key=value"], None),
    # data
    ("missing-data", [*TRAIN, "data.dataset={tmp}/nope.txt"], ["nope.txt", "does not exist"], None),
    ("empty-data", [*TRAIN, "--dataset", "{tmp}/empty.txt"], ["empty.txt"], _empty_file),
    ("binary-data", [*TRAIN, "--dataset", "{tmp}/weights.txt"], ["weights.txt", "UTF-8"], _binary_file),
    ("label-column-missing", [*TRAIN, "--dataset", "{tmp}/data.txt", "--label_column", "stars"], ["stars"],
     _text_data),
    ("cache-dir-is-a-file", TRAIN, ["cache-file"], _cache_is_a_file),
    # devices
    ("cuda-without-gpu", [*TRAIN, "--device", "cuda"], ["cuda", "--device cpu"], _no_gpu),
    ("unknown-device", [*TRAIN, "--device", "tpu"], ["tpu", "cpu"], None),
    # run folders
    ("train-into-a-finished-run", [*TRAIN, "--out_dir", "{run}"], ["already holds", "--resume", "--overwrite"], None),
    ("out-dir-is-a-file", [*TRAIN, "--out_dir", "{tmp}/a-file"], ["a-file", "is a file"], _a_file),
    ("out-dir-under-a-file", [*TRAIN, "--out_dir", "{tmp}/a-file/run"], ["a-file", "is a file"], _a_file),
    ("out-dir-under-proc", [*TRAIN, "--out_dir", "/proc/dlms-run"], ["/proc/dlms-run", "cannot write"], None),
    ("out-dir-read-only", [*TRAIN, "--out_dir", "{tmp}/read-only/run"], ["read-only", "cannot write"], _not_root),
    ("second-writer", ["train", "--resume", "{run}", "--max_steps", "40"], ["in use by another training"],
     _lock_the_run),
    ("second-writer-overwrite", [*TRAIN, "--out_dir", "{run}", "--overwrite"], ["in use by another training"],
     _lock_the_run),
    ("resume-to-fewer-steps", ["train", "--resume", "{run}", "--max_steps", "2"], ["already at step 16", "--max_steps"],
     None),
    ("resume-a-finished-run", ["train", "--resume", "{run}"], ["has finished", "--max_steps above 16"], None),
    ("resume-with-overrides", ["train", "--resume", "{run}", "train.batch_size=4"], ["--resume"], None),
    ("resume-and-overwrite", ["train", "--resume", "{run}", "--overwrite"], ["--resume"], None),
    ("resume-missing-folder", ["train", "--resume", "{tmp}/nope"], ["does not exist"], None),
    ("resume-folder-without-checkpoint", ["train", "--resume", "{tmp}"], ["no checkpoint"], None),
    ("resume-state-without-step", ["train", "--resume", "{tmp}/no-step", "--max_steps", "40"], ["damaged", "step"],
     _state_without_step),
    ("resume-wrong-shaped-optimizer", ["train", "--resume", "{tmp}/bad-optimizer", "--max_steps", "40"],
     ["does not fit", "optimizer"], _wrong_shaped_optimizer),
    ("resume-max-steps-zero", ["train", "--resume", "{run}", "--max_steps", "0"], ["--max_steps", "at least 1"], None),
    # sampling flags
    ("top-p-zero", ["generate", "--checkpoint", "{run}", "--top_p", "0"], ["--top_p", "(0, 1]"], None),
    ("top-p-two", ["generate", "--checkpoint", "{run}", "--top_p", "2"], ["--top_p", "(0, 1]"], None),
    ("tokens-per-step-zero", ["generate", "--checkpoint", "{run}", "--sampler", "confidence", "--tokens_per_step", "0"],
     ["--tokens_per_step", "at least 1"], None),
    ("seq-len-zero", ["generate", "--checkpoint", "{run}", "--seq_len", "0"], ["--seq_len", "at least 2"], None),
    ("seq-len-beyond-the-model", ["generate", "--checkpoint", "{run}", "--seq_len", "500"],
     ["--seq_len", "maximum of 32"], None),
    ("temperature-negative", ["generate", "--checkpoint", "{run}", "--temperature", "-1"], ["--temperature", "at least 0"],
     None),
    ("guidance-nan", ["generate", "--checkpoint", "{run}", "--guidance_scale", "nan"], ["--guidance_scale", "finite"],
     None),
    ("guidance-inf", ["generate", "--checkpoint", "{run}", "--guidance_scale", "inf"], ["--guidance_scale", "finite"],
     None),
    ("num-samples-negative", ["generate", "--checkpoint", "{run}", "--num_samples", "-1"], ["--num_samples", "at least 1"],
     None),
    ("top-k-negative", ["generate", "--checkpoint", "{run}", "--top_k", "-1"], ["--top_k", "at least 0"], None),
    ("zero-steps", ["generate", "--checkpoint", "{run}", "--num_steps", "0"], ["--num_steps", "at least 1"], None),
    ("threshold-two", ["generate", "--checkpoint", "{run}", "--sampler", "threshold", "--threshold", "2"],
     ["--threshold", "(0, 1]"], None),
    ("steps-on-threshold", ["generate", "--checkpoint", "{run}", "--sampler", "threshold", "--num_steps", "8"],
     ["--num_steps", "does not apply", "'threshold'"], None),
    ("eval-threshold-on-confidence", ["eval", "--checkpoint", "{run}", "--passes", "0", "--threshold", "0.5"],
     ["--threshold", "does not apply"], None),
    ("block-size-zero", ["generate", "--checkpoint", "{run}", "--block_size", "0"], ["--block_size", "at least 1"], None),
    ("cache-unknown", ["generate", "--checkpoint", "{run}", "--cache", "full"], ["--cache", "invalid choice"], None),
    ("seed-negative-generate", ["generate", "--checkpoint", "{run}", "--seed", "-1"], ["--seed", "at least 0"], None),
    ("step-interval-zero", ["generate", "--checkpoint", "{run}", "--show_steps", "--step_interval", "0"],
     ["--step_interval"], None),
    ("prompt-longer-than-sequence", ["generate", "--checkpoint", "{run}", "--seq_len", "6", "--prompt",
                                     "the chef cooked a delicious pasta at the bistro"], ["prompt", "--seq_len"], None),
    ("label-for-an-unlabelled-model", ["generate", "--checkpoint", "{run}", "--label", "positive"], ["label"], None),
    ("unknown-sampler", ["generate", "--checkpoint", "{run}", "--sampler", "nope"], ["sampler", "nope"], None),
    ("sampler-of-another-method", ["generate", "--checkpoint", "{run}", "--sampler", "ddpm"], ["ddpm", "masked"], None),
    ("unknown-device-generate", ["generate", "--checkpoint", "{run}", "--device", "tpu"], ["tpu"], None),
    ("guidance-with-nothing-to-guide", ["generate", "--checkpoint", "{run}", "--guidance_scale", "3"],
     ["--guidance_scale", "--prompt", "--label"], None),
    ("prompt-guidance-on-ar-without-dropout", ["generate", "--checkpoint", "{ar}", "--prompt", "the",
                                                "--guidance_scale", "3"],
     ["--guidance_scale on the prompt", "'ar' run", "train.prompt_drop_prob > 0"], None),
    ("eta-on-a-masked-sampler", ["generate", "--checkpoint", "{run}", "--eta", "0.5"],
     ["--eta", "does not apply", "'confidence'"], None),
    ("steps-on-the-ar-sampler", ["generate", "--checkpoint", "{ar}", "--num_steps", "8"],
     ["--num_steps", "does not apply", "'ar'"], None),
    ("tokens-per-step-on-ancestral", ["generate", "--checkpoint", "{run}", "--sampler", "ancestral",
                                      "--tokens_per_step", "2"],
     ["--tokens_per_step", "does not apply"], None),
    ("view-zero-steps", ["view", "--checkpoint", "{run}", "--steps", "0"], ["--steps", "at least 1"], None),
    ("view-seq-len-one", ["view", "--checkpoint", "{run}", "--seq_len", "1"], ["--seq_len", "at least 2"], None),
    # checkpoints
    ("missing-checkpoint", ["generate", "--checkpoint", "{tmp}/nope"], ["does not exist"], None),
    ("not-a-checkpoint", ["eval", "--checkpoint", "{tmp}"], ["no checkpoint"], None),
    ("damaged-checkpoint", ["generate", "--checkpoint", "{tmp}/damaged"], ["damaged"], _damaged_weights),
    ("nan-weights", ["generate", "--checkpoint", "{tmp}/nan-weights"], ["NaN", "another checkpoint"], _nan_weights),
    ("nan-weights-eval", ["eval", "--checkpoint", "{tmp}/nan-weights"], ["NaN"], _nan_weights),
    ("evaluator-of-another-method", ["eval", "--checkpoint", "{ar}", "--evaluator", "{run}", "--num_samples", "2",
                                     "--passes", "0"], ["masked", "'ar'"], None),
    # a model never scores its own samples: the same run, by its folder or its checkpoint folder
    ("evaluator-is-the-checkpoint", ["eval", "--checkpoint", "{ar}", "--evaluator", "{ar}", "--num_samples", "2",
                                     "--passes", "0"], ["--evaluator", "own samples", "another AR run", "Hugging Face"],
     None),
    ("evaluator-is-the-checkpoint-folder", ["eval", "--checkpoint", "{ar}/", "--evaluator", "{ar}/checkpoint",
                                            "--passes", "0"], ["--evaluator", "own samples"], None),
    ("ar-checkpoint-is-the-checkpoint", ["eval", "--checkpoint", "{run}", "--ar_checkpoint", "{run}", "--passes", "0"],
     ["own samples"], None),
    # eval flags
    ("eval-batch-size-zero", ["eval", "--checkpoint", "{run}", "--batch_size", "0"], ["--batch_size", "at least 1"], None),
    ("eval-passes-negative", ["eval", "--checkpoint", "{run}", "--passes", "-1"], ["--passes", "at least 0"], None),
    ("eval-num-samples-negative", ["eval", "--checkpoint", "{run}", "--num_samples", "-1"], ["--num_samples"], None),
    ("eval-max-sequences-zero", ["eval", "--checkpoint", "{run}", "--max_sequences", "0"], ["--max_sequences"], None),
    ("eval-show-negative", ["eval", "--checkpoint", "{run}", "--passes", "0", "--show", "-1"],
     ["--show", "at least 0"], None),
    ("eval-discrete-steps-zero", ["eval", "--checkpoint", "{run}", "--discrete_steps", "0"], ["--discrete_steps"], None),
    ("eval-top-p-two", ["eval", "--checkpoint", "{run}", "--passes", "0", "--num_samples", "2", "--top_p", "2"],
     ["--top_p"], None),
    ("eval-output-under-a-file", ["eval", "--checkpoint", "{run}", "--output", "{tmp}/a-file/out.json"],
     ["--output", "is a file"], _a_file),
    ("eval-output-is-a-folder", ["eval", "--checkpoint", "{run}", "--output", "{tmp}"], ["--output", "folder"], None),
    ("eval-missing-dataset", ["eval", "--checkpoint", "{run}", "--dataset", "{tmp}/nope.txt", "--num_samples", "0"],
     ["nope.txt"], None),
    ("eval-mauve-without-evaluator", ["eval", "--checkpoint", "{run}", "--passes", "0", "--num_samples", "2", "--mauve"],
     ["--evaluator"], None),
    ("eval-missing-references", ["eval", "--checkpoint", "{run}", "--passes", "0", "--num_samples", "0",
                                 "--references", "{tmp}/refs.jsonl"], ["refs.jsonl"], None),
    ("eval-missing-multiple-choice", ["eval", "--checkpoint", "{run}", "--passes", "0", "--num_samples", "0",
                                      "--multiple_choice", "{tmp}/mc.jsonl"], ["mc.jsonl"], None),
    # other commands
    ("experiment-missing-config", ["experiment", "data-scaling", "--config", "{tmp}/nope.yaml"], ["nope.yaml"], None),
    ("plot-not-an-experiment", ["plot", "{tmp}"], ["not an experiment folder"], None),
    ("models-check-missing-config", ["models", "check", "--config", "{tmp}/nope.yaml"], ["nope.yaml"], None),
    ("dglm-generate-missing-run", ["dglm", "generate", "--run", "{tmp}/nope"], ["nope"], None),
    ("dglm-classifier-missing-run", ["dglm", "train-classifier", "--run", "{tmp}/nope", "--data", "builtin",
                                     "--label", "sentiment"], ["nope"], None),
]


@pytest.mark.parametrize("case_id, argv, expected, setup", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_line_and_loses_nothing(case_id, argv, expected, setup, guarded, trained_runs,
                                                       tmp_path, capsys, monkeypatch):
    ctx = {"tmp": tmp_path, "run": guarded, "ar": trained_runs["ar"], "cleanup": [], "env": {}}
    if setup is not None:
        setup(ctx)
    for key, value in ctx["env"].items():
        monkeypatch.setenv(key, value)
    before = snapshot(guarded)
    words = [w.format(tmp=tmp_path, run=guarded, ar=trained_runs["ar"]) for w in argv]
    try:
        try:
            code = main(words)
        except SystemExit as exc:  # argparse's own usage errors exit 2 as well
            code = exc.code
    finally:
        for undo in ctx["cleanup"]:
            undo()
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    error_lines = [line for line in lines if line.startswith("error:") or ": error:" in line]
    assert len(error_lines) == 1 and "Traceback" not in err, err
    if lines[-1].startswith("error:"):  # our own errors: nothing but the one line
        assert len(lines) == 1, err
    for word in expected:
        assert word in err, f"{word!r} not in {err!r}"
    assert snapshot(guarded) == before, "the run next to the bad input changed"


def test_the_table_is_large_and_every_case_is_distinct():
    assert len(CASES) >= 60
    assert len({c[0] for c in CASES}) == len(CASES)


def test_the_cli_in_a_real_process_exits_2_without_traceback(guarded, tmp_path):
    """The same contract through a real process (console output, exit status)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "dlms.cli", "generate", "--checkpoint", str(guarded), "--top_p", "0"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error:") and len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr + proc.stdout


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, capsys, monkeypatch):
    from dlms.methods.masked import MaskedDiffusion

    run = tmp_path / "nan"
    original = MaskedDiffusion.loss
    calls = {"n": 0}

    def loss_that_diverges(self, model, batch):
        calls["n"] += 1
        out = original(self, model, batch)
        if calls["n"] > 10:
            out.loss = out.loss * torch.tensor(float("nan"))
        return out

    monkeypatch.setattr(MaskedDiffusion, "loss", loss_that_diverges)
    assert main(["train", *tiny_overrides(run, steps=16)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error:") and "nan" in err and "step 11" in err and "checkpoint (step 8)" in err
    state = json.loads((run / "checkpoint" / "trainer_state.json").read_text())
    assert state["step"] == 8  # the save at step 8 survives; nothing was written after the NaN
    weights = load_file(str(run / "checkpoint" / "model.safetensors"))
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_nan_loss_before_the_first_save_says_no_checkpoint_was_kept(tmp_path, capsys, monkeypatch):
    from dlms.methods.masked import MaskedDiffusion

    original = MaskedDiffusion.loss

    def loss_nan(self, model, batch):
        out = original(self, model, batch)
        out.loss = out.loss * torch.tensor(float("nan"))
        return out

    monkeypatch.setattr(MaskedDiffusion, "loss", loss_nan)
    assert main(["train", *tiny_overrides(tmp_path / "nan", steps=16)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "no checkpoint had been saved yet" in err and "was kept" not in err
    assert not (tmp_path / "nan" / "checkpoint").exists()
