"""`dlms dglm train / train-classifier / generate / eval` end to end on tiny models: stage
folders, resume, one stage alone, steering controls, the evaluation table and its bad inputs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from dlms.cli import main


def tiny_config(folder: Path, encoder: Path, decoder: Path, **changes) -> Path:
    cfg = {
        "sentence_encoder_model_name": str(encoder), "auto_regressive_model_name": str(decoder), "device": "cpu",
        "out_dir": str(folder / "run"),
        "data": {"dataset": "builtin:300", "val_fraction": 0.2, "min_words": 2},
        "latent": {"num_pseudo_tokens": 2, "d_model": 32, "n_layers": 1, "n_heads": 2, "mlp_hidden": 64},
        "diffusion": {"steps": 6, "batch_size": 16, "save_every": 3, "warmup_steps": 1},
        "decoder": {"steps": 4, "batch_size": 8, "save_every": 2, "warmup_steps": 1, "num_soft_tokens": 2,
                    "soft_prompt_width": 32, "max_prefix_tokens": 16, "max_continuation_tokens": 16},
        "generation": {"num_steps": 4, "max_tokens": 6, "control_samples": 2},
    }
    for key, value in changes.items():
        section, name = key.split(".")
        cfg[section][name] = value
    path = folder / "dglm.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def dglm_run(tmp_path_factory, trained_runs, tiny_encoder_folder):
    folder = tmp_path_factory.mktemp("dglm")
    config = tiny_config(folder, tiny_encoder_folder, trained_runs["ar"])
    assert main(["dglm", "train", "--config", str(config)]) == 0
    run = folder / "run"
    assert main(["dglm", "train-classifier", "--run", str(run), "--data", "builtin:300", "--label", "sentiment"]) == 0
    return {"config": config, "run": run, "folder": folder}


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_train_writes_every_stage_with_checkpoints_and_metrics(dglm_run):
    run = dglm_run["run"]
    for stage in ("embed", "latent_diffusion", "decoder"):
        assert json.loads((run / stage / "config.json").read_text())["stage"] == stage
    assert json.loads((run / "latent_diffusion" / "progress.json").read_text())["step"] == 6
    assert json.loads((run / "decoder" / "progress.json").read_text())["step"] == 4
    steps = [(m["stage"], m["step"]) for m in metrics(run)]
    assert steps == [("diffusion", 3), ("diffusion", 6), ("decoder", 2), ("decoder", 4)]
    assert all(m["val_loss"] > 0 for m in metrics(run))
    assert (run / "classifiers" / "sentiment.json").is_file()


def test_a_finished_run_is_not_retrained_and_more_steps_resume(dglm_run, capsys):
    run = dglm_run["run"]
    weights = (run / "latent_diffusion" / "model.safetensors").read_bytes()
    assert main(["dglm", "train", "--config", str(dglm_run["config"]), "--stage", "diffusion"]) == 0
    assert "already trained" in capsys.readouterr().out
    assert (run / "latent_diffusion" / "model.safetensors").read_bytes() == weights
    cfg = yaml.safe_load(dglm_run["config"].read_text())
    cfg["diffusion"]["steps"] = 9
    cfg["decoder"]["steps"] = 6
    path = dglm_run["folder"] / "longer.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["dglm", "train", "--config", str(path), "--stage", "diffusion", "--stage", "decoder"]) == 0
    out = capsys.readouterr().out
    assert "resuming at step 6 of 9" in out and "resuming at step 4 of 6" in out
    assert json.loads((run / "latent_diffusion" / "progress.json").read_text())["step"] == 9
    assert json.loads((run / "decoder" / "progress.json").read_text())["step"] == 6
    assert (run / "decoder" / "decoder" / "model.safetensors").is_file()  # the stage carries its own decoder


def test_one_stage_runs_alone(dglm_run, tmp_path, capsys):
    import shutil

    run = dglm_run["run"]
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    shutil.rmtree(copy / "decoder")
    assert main(["dglm", "train", "--config", str(dglm_run["config"]), "--out_dir", str(copy), "--stage", "decoder"]) == 0
    assert (copy / "decoder" / "progress.json").is_file()
    out = capsys.readouterr().out
    assert "decoder:" in out and "diffusion:" not in out and "embed:" not in out


def test_generate_prints_num_samples_continuations_of_the_prefix(dglm_run, capsys):
    run = str(dglm_run["run"])
    assert main(["dglm", "generate", "--run", run, "--prefix", "the steak", "--num_samples", "3", "--guidance", "0"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("the steak") for line in lines)
    assert main(["dglm", "generate", "--run", run, "--prefix", "the steak", "--num_samples", "2",
                 "--control", "sentiment=positive", "--guidance", "5"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2
    assert main(["dglm", "generate", "--run", run, "--prefix", "the steak", "--num_samples", "2", "--plain"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2


def test_the_python_api_is_reproducible_by_seed_and_guidance_changes_proposals(dglm_run):
    from dlms.dglm import DglmPipeline

    pipe = DglmPipeline.load(dglm_run["run"])
    a = pipe.generate(["the chef", "my dad"], num_samples=2, seed=3)
    assert len(a) == 4 and a == pipe.generate(["the chef", "my dad"], num_samples=2, seed=3)
    g = torch.Generator().manual_seed(0)
    plain = pipe.propose(["the chef"] * 4, generator=g)
    g = torch.Generator().manual_seed(0)
    steered = pipe.propose(["the chef"] * 4, {"sentiment": "positive"}, 50.0, generator=g)
    clf = pipe.classifier("sentiment")
    score = lambda x: clf.log_probs(pipe.standardizer.inverse(x))[:, clf.class_index("positive")].mean()  # noqa: E731
    assert score(steered) > score(plain)


@pytest.mark.parametrize("argv, message", [
    (["--control", "sentiment=ecstatic"], "has no value 'ecstatic'"),
    (["--control", "topic=food"], "no classifier for 'topic'"),
    (["--control", "sentiment"], "must look like attribute=value"),
    (["--prefix", " ".join(["the"] * 40)], "longer than"),
])
def test_bad_generation_inputs_are_one_line_errors(dglm_run, capsys, argv, message):
    full = ["dglm", "generate", "--run", str(dglm_run["run"]), "--num_samples", "1", *argv]
    if "--prefix" not in argv:
        full += ["--prefix", "the chef"]
    assert main(full) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_a_folder_that_is_not_a_dglm_run_is_refused(trained_runs, capsys):
    assert main(["dglm", "generate", "--run", str(trained_runs["ar"]), "--prefix", "x"]) == 2
    assert "holds no DGLM run" in capsys.readouterr().err


def test_eval_writes_the_table_the_sweep_csv_and_the_plot(dglm_run, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["dglm", "eval", "--run", str(dglm_run["run"]), "--label", "sentiment", "--guidance", "0,5",
                 "--num_prefixes", "3", "--out", str(out)]) == 0
    import csv

    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["system"] for r in rows] == ["plain-ar", "dglm-unguided", "dglm-guided"]
    for r in rows:
        assert 0 <= float(r["success"]) <= 1 and 0 <= float(r["grammatical"]) <= 1
        assert float(r["fluency_ppl"]) > 1 and 0 < float(r["distinct_1"]) <= 1
        assert int(r["samples"]) % 2 == 0  # every prefix steered to both sentiments
    assert (out / "guidance_sweep.png").stat().st_size > 1000
    assert "| plain-ar |" in (out / "report.md").read_text()


def test_eval_on_a_labelled_file_steers_to_the_opposite_label(dglm_run, tmp_path, trained_runs, tiny_encoder_folder):
    rows = [{"text": f"the food was {w} and the service was {w} .", "mood": m}
            for i in range(60) for w, m in ((["great", "fast"][i % 2], "happy"), (["awful", "slow"][i % 2], "sad"))]
    data = tmp_path / "moods.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = tiny_config(tmp_path, tiny_encoder_folder, trained_runs["ar"], **{"data.dataset": str(data)})
    assert main(["dglm", "train", "--config", str(config)]) == 0
    run = tmp_path / "run"
    assert main(["dglm", "train-classifier", "--run", str(run), "--data", str(data), "--label", "mood"]) == 0
    out = tmp_path / "eval"
    assert main(["dglm", "eval", "--run", str(run), "--label", "mood", "--guidance", "10", "--num_prefixes", "4",
                 "--out", str(out), "--no_plain"]) == 0
    setup = json.loads((out / "setup.json").read_text())
    assert setup["judge"] == "TF-IDF logistic regression" and setup["judge_held_out_accuracy"] == 1.0
    assert setup["target"] == "opposite" and setup["prompts"] == 4
    assert main(["dglm", "eval", "--run", str(run), "--label", "mood", "--target", "ecstatic", "--guidance", "1",
                 "--num_prefixes", "2", "--out", str(out)]) == 2


def test_the_plain_baseline_never_pads_its_prefixes(dglm_run):
    from dlms.dglm import DglmPipeline

    pipe = DglmPipeline.load(dglm_run["run"])
    prefixes = ["the", "the chef cooked a", "my dad"]
    together = pipe.generate_plain(prefixes, temperature=0)
    assert together == [pipe.generate_plain(p, temperature=0)[0] for p in prefixes]


def test_fluency_perplexity_scores_each_text_as_if_alone(dglm_run):
    import math

    from dlms.dglm import DglmPipeline
    from dlms.dglm.evaluate import continuation_perplexity
    from dlms.dglm.soft_prompt import CausalLM

    pipe = DglmPipeline.load(dglm_run["run"])
    lm = CausalLM(pipe.decoder.decoder).eval()
    tokens = pipe.tokens
    rows = [("the", "chef was great ."), ("my dad ate a", "bland steak .")]
    nll, count = 0.0, 0
    for prefix, continuation in rows:  # one text at a time: no padding anywhere
        head = [tokens.bos_id] + tokens.tokenizer.encode(prefix, add_special_tokens=False)
        tail = tokens.tokenizer.encode(" " + continuation, add_special_tokens=False) + [tokens.eos_id]
        ids = torch.tensor([head + tail])
        with torch.no_grad():
            logp = torch.log_softmax(lm.logits(lm.token_embeddings(ids)), -1)[0]
        nll -= sum(float(logp[len(head) - 1 + i, tok]) for i, tok in enumerate(tail))
        count += len(tail)
    expected = math.exp(nll / count)
    got = continuation_perplexity(lm, tokens, [p for p, _ in rows], [c for _, c in rows])
    assert got == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_each_stage_trains_generates_and_evaluates_in_a_forced_precision(precision, tmp_path, trained_runs,
                                                                          tiny_encoder_folder, capsys):
    """Forced bf16 runs on any CPU (emulated where it is not native): every stage trains to finite
    losses, the run records the precision, and generation and evaluation run under it."""
    import math

    from dlms.dglm import DglmPipeline

    config = tiny_config(tmp_path, tiny_encoder_folder, trained_runs["ar"], **{"diffusion.steps": 3,
                                                                               "decoder.steps": 2})
    assert main(["dglm", "train", "--config", str(config), "--precision", precision]) == 0
    out = capsys.readouterr().out.splitlines()
    assert f"precision {precision}" in out[0]
    for stage in ("diffusion", "decoder"):
        first = next(line for line in out if line.startswith(f"{stage}:"))
        assert first.endswith(f"precision {precision}")
    run = tmp_path / "run"
    assert yaml.safe_load((run / "dglm_config.yaml").read_text())["precision"] == precision
    losses = [(m["train_loss"], m["val_loss"]) for m in metrics(run)]
    assert {m["stage"] for m in metrics(run)} == {"diffusion", "decoder"}
    assert all(math.isfinite(a) and math.isfinite(b) and b > 0 for a, b in losses)

    assert main(["dglm", "train-classifier", "--run", str(run), "--data", "builtin:200", "--label", "sentiment"]) == 0
    capsys.readouterr()
    assert main(["dglm", "generate", "--run", str(run), "--prefix", "the steak", "--num_samples", "2",
                 "--control", "sentiment=negative", "--guidance", "5", "--cfg_scale", "2"]) == 0
    assert main(["dglm", "generate", "--run", str(run), "--prefix", "the steak", "--num_samples", "2", "--plain"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and all(line.startswith("the steak") for line in lines)

    pipe = DglmPipeline.load(run)
    assert pipe.precision == precision
    seen: dict[str, list[bool]] = {"denoiser": [], "soft_prompt": [], "encoder": []}

    def watch(name):
        return lambda module, args, output: seen[name].append(torch.is_autocast_enabled("cpu"))

    pipe.diffusion.denoiser.register_forward_hook(watch("denoiser"))
    pipe.decoder.soft_prompt.register_forward_hook(watch("soft_prompt"))
    pipe.encoder.model.register_forward_hook(watch("encoder"))
    texts = pipe.generate("the chef", num_samples=2, control={"sentiment": "positive"}, guidance=5.0)
    assert len(texts) == 2
    assert set(seen["denoiser"]) == set(seen["soft_prompt"]) == {precision == "bf16"}
    assert seen["encoder"] == [False]  # prefixes are encoded in fp32, as the training embeddings were
    assert all(p.dtype == torch.float32 for p in pipe.diffusion.denoiser.parameters())

    report = tmp_path / "eval"
    assert main(["dglm", "eval", "--run", str(run), "--label", "sentiment", "--guidance", "0,5", "--num_prefixes", "2",
                 "--out", str(report), "--no_plain"]) == 0
    setup = json.loads((report / "setup.json").read_text())
    assert setup["precision"] == precision
    import csv

    assert all(math.isfinite(float(r["fluency_ppl"])) for r in csv.DictReader((report / "results.csv").open()))


def test_auto_precision_is_saved_resolved_and_kept_by_a_resumed_run(tmp_path, capsys):
    from dlms.assembly import resolve_precision
    from dlms.dglm import DglmConfig, DglmTrainer

    trainer = DglmTrainer(DglmConfig(out_dir=str(tmp_path / "a"), device="cpu"), log=lambda _: None)
    assert trainer.cfg.precision == resolve_precision(torch.device("cpu"), "auto") and "(auto: " in trainer.precision_note
    started = tmp_path / "b"
    started.mkdir()
    (started / "dglm_config.yaml").write_text(yaml.safe_dump({"precision": "bf16"}))  # started on a bf16 machine
    kept = DglmTrainer(DglmConfig(out_dir=str(started), device="cpu"), log=lambda _: None)
    assert kept.precision == "bf16" and "kept" in kept.precision_note
    forced = DglmTrainer(DglmConfig(out_dir=str(started), device="cpu", precision="fp32"), log=lambda _: None)
    assert forced.precision == "fp32"
