"""Prompt dropout (`train.prompt_drop_prob`): the positions it hides, gaussian's noising of a dropped
prompt at the row's t, block's two copies, the config checks, seeded and resumable draws in the
trainer, and guidance on the prompt of a tiny prompt/response run (Python and `dlms generate`).
The contract over every registered method is tests/contract/test_dropped_prompts.py."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dlms import DiffusionLM, Trainer
from dlms.cli import main, one_line
from dlms.config import config_from_dict, load_config
from dlms.errors import ConfigError
from dlms.methods.base import PROMPT_DROPPED, dropped_prompts, prompt_region
from dlms.methods.masked import MaskedDiffusion
from tests.conftest import tiny_overrides
from tests.contract.test_dropped_prompts import record_calls
from tests.contract.test_prompt_response import L, PROMPT_LEN, ROWS, SPECIAL, method_and_model


def test_prompt_region_is_the_head_after_its_start_token():
    region = prompt_region(torch.tensor([5, 3, 1]), 7)
    expected = torch.tensor([[0, 1, 1, 1, 1, 0, 0], [0, 1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0]], dtype=torch.bool)
    assert torch.equal(region, expected)


def test_dropped_prompts_are_the_marked_rows_prompt_regions():
    x0 = ROWS[:4]
    assert dropped_prompts({"prompt_len": PROMPT_LEN[:4]}, x0) is None  # no draw: nothing dropped
    assert dropped_prompts({PROMPT_DROPPED: torch.ones(4, dtype=torch.bool)}, x0) is None  # text rows: no prompt
    dropped = torch.tensor([True, False, True, False])
    hidden = dropped_prompts({"prompt_len": PROMPT_LEN[:4], PROMPT_DROPPED: dropped}, x0)
    assert torch.equal(hidden.any(-1), dropped)
    assert torch.equal(hidden[0], prompt_region(PROMPT_LEN[:1], L)[0])


def batch_with(dropped: bool) -> dict:
    return {"input_ids": ROWS.clone(), "labels": None, "prompt_len": PROMPT_LEN.clone(),
            PROMPT_DROPPED: torch.full((ROWS.shape[0],), dropped)}


def test_gaussian_noises_a_dropped_prompt_at_the_rows_t_like_its_response():
    """The network input at a dropped prompt is c_in(t) (alpha(t) x0 + sigma(t) eps) with the
    response's t and noise draw, and no clean flag: what the sampler's unconditional branch feeds it."""
    method, model = method_and_model("gaussian")
    model.eval()
    calls, handle = record_calls(model)
    torch.manual_seed(4)
    with torch.no_grad():
        method.loss(model, batch_with(True))
    handle.remove()
    inputs = calls[-1]["inputs_embeds"]  # [B, L, 2D + 1]: [z_t scaled, previous estimate, clean flag]
    table = method.token_embeddings(model)
    x0 = table[ROWS]
    torch.manual_seed(4)  # the loss's draws, in its order: t, then the noise
    t = method.sample_times(ROWS.shape[0], ROWS.device)
    eps = torch.randn_like(x0)
    c_in, _ = method.input_scales(t, x0.shape[-1])
    z = method.schedule.alpha(t)[:, None, None] * x0 + method.schedule.sigma(t)[:, None, None] * eps
    region = prompt_region(PROMPT_LEN, L)
    dim = x0.shape[-1]
    torch.testing.assert_close(inputs[..., :dim][region], (z * c_in[:, None, None])[region])
    assert (inputs[..., -1][region] == 0).all() and (inputs[:, 0, -1] == 1).all()  # the start token stays clean


def test_block_masks_a_dropped_prompt_in_both_copies():
    """The clean copy too: the blocks after the prompt see it masked, as at sampling."""
    method, model = method_and_model("block")
    calls, handle = record_calls(model)
    torch.manual_seed(0)
    with torch.no_grad():
        method.loss(model, batch_with(True))
    handle.remove()
    ids = calls[-1]["input_ids"]  # [B, 2L]: noisy copy, clean copy
    region = prompt_region(PROMPT_LEN, L)
    for copy in (ids[:, :L], ids[:, L:]):
        assert (copy[region] == SPECIAL.mask).all() and (copy[:, 0] == SPECIAL.bos).all()
    clean_response = ~region & (torch.arange(L)[None, :] >= PROMPT_LEN[:, None])
    assert torch.equal(ids[:, L:][clean_response], ROWS[clean_response])


@pytest.mark.parametrize("value, message", [
    (1.0, r"'train.prompt_drop_prob' must be in \[0, 1\)"),
    (-0.1, r"'train.prompt_drop_prob' must be in \[0, 1\)"),
])
def test_the_probability_is_checked(value, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"data": {"format": "prompt_response"}, "train": {"prompt_drop_prob": value}})
    cfg = config_from_dict({"data": {"format": "prompt_response"}, "train": {"prompt_drop_prob": 0.0}})
    assert cfg.train.prompt_drop_prob == 0.0


def test_prompt_dropout_on_text_data_is_one_clear_error(tmp_path, capsys):
    code = main(["train", "--samples", "0", *tiny_overrides(tmp_path / "run"), "train.prompt_drop_prob=0.2"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "'train.prompt_drop_prob' applies to prompt/response data only" in err
    assert "data.format=prompt_response or train.prompt_drop_prob=0" in err
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------- training runs


PAIRS = [(f"{n} {f}", f"the {n} serves {f} food .") for n in ("eagle", "mill", "aromi") for f in ("thai", "french")]


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pd") / "pairs.jsonl"
    path.write_text("".join(json.dumps({"prompt": p, "response": r}) + "\n" for p, r in PAIRS * 10), encoding="utf-8")
    return path


def pr_args(out: Path, method: str, data_file: Path, steps: int, **extra) -> list[str]:
    return tiny_overrides(out, method, steps, **{
        "data.dataset": str(data_file), "data.format": "prompt_response", "data.seq_len": 24,
        "train.eval_every": steps, "train.save_every": steps, "train.eval_batches": 1, "sample.num_steps": 4,
        "train.prompt_drop_prob": 0.5, **extra})


def test_guidance_on_the_prompt_of_an_ar_run_trained_without_dropout_is_one_error(data_file, tmp_path, capsys):
    """ar shows a hidden prompt as mask tokens, an input only prompt dropout trains: without it,
    guidance on the prompt is refused (methods/autoregressive.py), with a label or not at all fine."""
    args = pr_args(tmp_path / "run", "ar", data_file, 2, **{"train.prompt_drop_prob": 0.0})
    assert main(["train", "--samples", "0", *args]) == 0
    capsys.readouterr()
    code = main(["generate", "--checkpoint", str(tmp_path / "run"), "--prompt", "eagle thai", "--guidance_scale", "2"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "--guidance_scale on the prompt needs a 'ar' run trained with train.prompt_drop_prob > 0" in err
    lm = DiffusionLM.load_checkpoint(tmp_path / "run", device="cpu")
    assert len(lm.respond(["eagle thai"], guidance=1.0)) == 1


def _losses(run_dir: Path) -> dict[int, float]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {line["step"]: line["loss"] for line in lines if "loss" in line}


def test_drops_are_seeded_and_a_resumed_run_repeats_them(data_file, tmp_path, monkeypatch):
    """The dropped rows of every step come from the step's seeded generator: a second run with the
    same seed draws the same rows, and an interrupted and resumed one the same rows and losses."""
    seen: list[list[bool]] = []
    original_loss = MaskedDiffusion.loss

    def recording_loss(self, model, batch):
        seen.append(batch[PROMPT_DROPPED].tolist())
        return original_loss(self, model, batch)

    monkeypatch.setattr(MaskedDiffusion, "loss", recording_loss)
    straight = tmp_path / "straight"
    Trainer(load_config(None, pr_args(straight, "masked", data_file, 6, **{"train.save_every": 3}))).train()
    first, seen[:] = list(seen), []
    flat = [x for row in first for x in row]
    assert len(first) == 6 and any(flat) and not all(flat)  # p = 0.5: some rows dropped, some kept

    broken = tmp_path / "broken"
    trainer = Trainer(load_config(None, pr_args(broken, "masked", data_file, 6, **{"train.save_every": 3})))
    original_step = Trainer._optimizer_step

    def crash_at_step_5(self):
        if self.step == 4:
            raise KeyboardInterrupt
        return original_step(self)

    monkeypatch.setattr(Trainer, "_optimizer_step", crash_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    monkeypatch.setattr(Trainer, "_optimizer_step", original_step)
    assert seen == first[:4]  # the same seed: the same rows dropped
    seen[:] = []
    Trainer.resume(broken).train()  # from the checkpoint of step 3
    assert seen == first[3:]
    assert _losses(broken) == _losses(straight)


@pytest.fixture(scope="module")
def guided_runs(data_file, tmp_path_factory):
    cache: dict[str, Path] = {}

    def get(method: str) -> Path:
        if method not in cache:
            out = tmp_path_factory.mktemp(f"pd-{method}")
            # Barely trained: after a few steps at the usual rate a tiny model answers padding at once,
            # whatever the guidance, and there would be nothing to compare.
            args = pr_args(out, method, data_file, 2, **{"train.learning_rate": 1e-4})
            assert main(["train", "--samples", "0", *args]) == 0
            cache[method] = out
        return cache[method]

    return get


@pytest.mark.parametrize("method", ["masked", "gaussian", "ar"])
def test_guidance_on_the_prompt_of_a_prompt_response_run(guided_runs, method, capsys):
    run = guided_runs(method)
    lm = DiffusionLM.load_checkpoint(run, device="cpu")
    steps = {} if method == "ar" else {"steps": 4}  # ar: one token per call
    assert lm.cfg.train.prompt_drop_prob == 0.5
    prompts = ["eagle thai", "mill french"]
    plain = lm.respond(prompts, **steps)
    assert lm.respond(prompts, **steps, guidance=1.0) == plain  # w = 1: plain sampling
    ids = lm.sample_ids("eagle thai", **steps, num_samples=4, seed=0)
    assert torch.equal(lm.sample_ids("eagle thai", **steps, num_samples=4, seed=0, guidance=1.0), ids)
    guided = lm.sample_ids("eagle thai", **steps, num_samples=4, seed=0, guidance=4.0)
    head = len(lm.encode_prompt("eagle thai"))
    assert torch.equal(guided[:, :head], ids[:, :head])  # the prompt is held...
    assert not torch.equal(guided, ids)  # ...and the response moves
    # --guidance_scale reaches `dlms generate --prompt` (which prints the responses).
    capsys.readouterr()
    args = ["generate", "--checkpoint", str(run), "--prompt", "eagle thai", "--num_samples", "3", "--seed", "0",
            *([] if method == "ar" else ["--num_steps", "4"])]
    assert main([*args, "--guidance_scale", "4"]) == 0
    printed = capsys.readouterr().out
    expected = lm.sample("eagle thai", **steps, num_samples=3, seed=0, guidance=4.0)
    assert printed == "".join(one_line(text) + "\n" for text in expected)
    assert main(args) == 0
    assert capsys.readouterr().out != printed

