"""Sharded training (FSDP2, `train.parallel=fsdp`) on two gloo processes under torchrun.

Against data parallelism on the same two processes, from the same initial weights and batches:
the loss curves agree within bf16 noise; an interrupted sharded run resumes bit for bit from its
sharded checkpoint; the consolidated `model.safetensors` loads in one process and samples; and a
Hugging Face backbone (a tiny Qwen2 from a config) shards per decoder layer.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dlms import DiffusionLM
from dlms.checkpoint import read_tensors
from tests.conftest import tiny_overrides

ROOT = Path(__file__).resolve().parents[2]
STEPS = 8


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}", "OMP_NUM_THREADS": "1"}


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)


def _train_args(run: Path, parallel: str, samples: int = 0, **extra) -> list[str]:
    return ["--samples", str(samples), *tiny_overrides(run, steps=STEPS, **{
        "train.parallel": parallel, "train.precision": "bf16", "train.save_every": 4, "train.eval_every": 4,
        "train.ema_decay": 0.9, **extra})]


def _metrics(run: Path) -> tuple[dict[int, float], dict[int, float]]:
    lines = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    return ({l["step"]: l["loss"] for l in lines if "loss" in l},
            {l["step"]: l["val_nll"] for l in lines if "val_nll" in l})


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """{'ddp', 'fsdp', 'resumed'}: the same tiny masked run, bf16, trained three ways on two processes."""
    root = tmp_path_factory.mktemp("fsdp")
    out = {}
    for name, parallel, extra in (("ddp", "ddp", {}), ("fsdp", "fsdp", {"train.activation_checkpointing": True})):
        out[name] = root / name
        # The samples printed after training need the whole (EMA) model: gathered by every process.
        samples = 2 if parallel == "fsdp" else 0
        done = _torchrun("-m", "dlms.cli", "train", *_train_args(out[name], parallel, samples, **extra))
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.count("sample:") == (2 if parallel == "fsdp" else 0)
    out["resumed"] = root / "resumed"
    crashed = _torchrun(str(ROOT / "tests/integration/train_then_crash.py"), "6", "train",
                        *_train_args(out["resumed"], "fsdp", **{"train.activation_checkpointing": True}))
    assert crashed.returncode != 0
    assert json.loads((out["resumed"] / "checkpoint/trainer_state.json").read_text())["step"] == 4
    done = _torchrun("-m", "dlms.cli", "train", "--resume", str(out["resumed"]), "--samples", "0")
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_fsdp_writes_shards_and_a_consolidated_checkpoint(runs):
    ckpt = runs["fsdp"] / "checkpoint"
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert state["parallel"] == "fsdp" and state["world_size"] == 2 and state["step"] == STEPS
    assert sorted(p.name for p in (ckpt / "sharded").glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    whole, ddp = read_tensors(ckpt / "model.safetensors"), read_tensors(runs["ddp"] / "checkpoint/model.safetensors")
    assert set(whole) == set(ddp) and all(whole[k].shape == ddp[k].shape for k in ddp)  # whole tensors, not shards
    assert set(read_tensors(ckpt / "ema.safetensors")) == set(ddp)
    assert not [p.name for p in runs["fsdp"].iterdir() if ".tmp-" in p.name]


def test_fsdp_loss_curve_matches_ddp_within_bf16_noise(runs):
    (ddp, ddp_val), (fsdp, fsdp_val) = _metrics(runs["ddp"]), _metrics(runs["fsdp"])
    assert sorted(ddp) == sorted(fsdp) == list(range(1, STEPS + 1))
    # bf16 keeps 8 bits of mantissa: the two ways of casting round differently, by about 2^-8.
    for step in ddp:
        assert abs(ddp[step] - fsdp[step]) <= 0.01 * abs(ddp[step]), (step, ddp[step], fsdp[step])
    for step in ddp_val:
        assert abs(ddp_val[step] - fsdp_val[step]) <= 0.01 * abs(ddp_val[step])
    # ... and the runs did learn: the loss is no constant that would match trivially.
    assert len({round(v, 3) for v in fsdp.values()}) > 4


def test_an_interrupted_fsdp_run_resumes_exactly(runs):
    assert _metrics(runs["resumed"]) == _metrics(runs["fsdp"])
    assert torch.equal(read_tensors(runs["resumed"] / "checkpoint/model.safetensors")["embed.weight"],
                       read_tensors(runs["fsdp"] / "checkpoint/model.safetensors")["embed.weight"])


def test_the_consolidated_checkpoint_loads_and_samples_in_one_process(runs):
    lm = DiffusionLM.load_checkpoint(runs["fsdp"], device="cpu")
    texts = lm.sample(num_samples=2, steps=4, seed=0)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    out = subprocess.run([sys.executable, "-m", "dlms.cli", "generate", "--checkpoint", str(runs["fsdp"]),
                          "--num_samples", "1", "--num_steps", "4"], capture_output=True, text=True, env=_env(), timeout=120)
    assert out.returncode == 0 and out.stdout.strip(), out.stderr[-2000:]


def test_a_sharded_checkpoint_resumed_in_one_process_is_one_clear_line(runs, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(runs["fsdp"], copy)
    done = subprocess.run([sys.executable, "-m", "dlms.cli", "train", "--resume", str(copy), "--max_steps", "10",
                           "--samples", "0"], capture_output=True, text=True, env=_env(), timeout=120)
    assert done.returncode != 0
    assert "--nproc_per_node 2" in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_a_hugging_face_backbone_shards_per_decoder_layer(tmp_path):
    from transformers import AutoModelForCausalLM, Qwen2Config

    from dlms.data.tokenizer import train_bpe_tokenizer
    texts = ["the cat sat on the mat.", "a dog ran in the park!", "the chef cooked a fine soup."] * 30
    tokenizer = train_bpe_tokenizer(texts, 300)
    config = Qwen2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=1, vocab_size=len(tokenizer), max_position_embeddings=64,
                         tie_word_embeddings=True)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(str(tmp_path / "qwen"))
    tokenizer.save_pretrained(str(tmp_path / "qwen"))
    run = tmp_path / "run"
    done = _torchrun("-m", "dlms.cli", "train", *_train_args(run, "fsdp", **{
        "model.backbone": str(tmp_path / "qwen"), "train.activation_checkpointing": True, "train.max_steps": 4}))
    assert done.returncode == 0, done.stderr[-3000:]
    losses, _ = _metrics(run)
    assert sorted(losses) == [1, 2, 3, 4] and all(v == v for v in losses.values())
    lm = DiffusionLM.load_checkpoint(run, device="cpu")
    assert len(lm.sample(num_samples=1, steps=4, seed=0)) == 1
