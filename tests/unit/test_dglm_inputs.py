"""Every bad input to `dlms dglm ...` and `dlms models check` is one `error:` line and exit
status 2: no traceback, nothing written, and a DGLM run next to it left byte for byte as it was."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from dlms.cli import main


def tiny_config(folder: Path, encoder: Path, decoder: Path, name: str = "dglm.yaml", **changes) -> Path:
    cfg = {
        "sentence_encoder_model_name": str(encoder), "auto_regressive_model_name": str(decoder), "device": "cpu",
        "precision": "fp32", "out_dir": str(folder / "run"),
        "data": {"dataset": "builtin:200", "val_fraction": 0.2, "min_words": 2},
        "latent": {"num_pseudo_tokens": 2, "d_model": 32, "n_layers": 1, "n_heads": 2, "mlp_hidden": 64},
        "diffusion": {"steps": 2, "batch_size": 8, "save_every": 2, "warmup_steps": 1},
        "decoder": {"steps": 2, "batch_size": 4, "save_every": 2, "warmup_steps": 1, "num_soft_tokens": 2,
                    "soft_prompt_width": 16, "max_prefix_tokens": 16, "max_continuation_tokens": 16},
        "generation": {"num_steps": 2, "max_tokens": 4, "control_samples": 2},
    }
    for key, value in changes.items():
        if "." in key:
            section, key = key.split(".")
            cfg[section][key] = value
        else:
            cfg[key] = value
    path = folder / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` (hidden ones too) -> sha256 of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def env(tmp_path_factory, trained_runs, tiny_encoder_folder) -> dict[str, Path]:
    """A trained tiny DGLM run with a sentiment classifier, damaged copies of it, and odd paths."""
    root = tmp_path_factory.mktemp("dglm-inputs")
    config = tiny_config(root, tiny_encoder_folder, trained_runs["ar"])
    assert main(["dglm", "train", "--config", str(config)]) == 0
    run = root / "run"
    assert main(["dglm", "train-classifier", "--run", str(run), "--data", "builtin:200", "--label", "sentiment"]) == 0
    paths = {"root": root, "run": run, "config": config, "ar": trained_runs["ar"], "encoder": tiny_encoder_folder}

    def damaged(name: str, relative: str, content: bytes) -> Path:
        copy = root / name
        shutil.copytree(run, copy)
        (copy / relative).write_bytes(content)
        return copy

    paths["bad_latent"] = damaged("bad-latent", "latent_diffusion/model.safetensors", b"not safetensors")
    paths["bad_latent_meta"] = damaged("bad-latent-meta", "latent_diffusion/config.json", b'{"stage": "latent_diffusion"}')
    paths["bad_decoder"] = damaged("bad-decoder", "decoder/soft_prompt.safetensors", b"\x00" * 64)
    paths["bad_embed"] = damaged("bad-embed", "embed/pairs.json", b"{not json")
    paths["bad_progress"] = damaged("bad-progress", "latent_diffusion/progress.json", b"[1, 2")
    paths["bad_yaml"] = damaged("bad-yaml", "dglm_config.yaml", b"device: [cpu\n")
    paths["bad_classifier"] = damaged("bad-classifier", "classifiers/sentiment.safetensors", b"broken")
    paths["bad_config_value"] = damaged("bad-config-value", "dglm_config.yaml",
                                        (run / "dglm_config.yaml").read_bytes().replace(b"num_steps: 2", b"num_steps: 0"))
    paths["no_decoder_stage"] = root / "no-decoder-stage"
    shutil.copytree(run, paths["no_decoder_stage"])
    shutil.rmtree(paths["no_decoder_stage"] / "decoder")
    paths["file"] = root / "a-file.txt"
    paths["file"].write_text("I am a file\n")
    paths["configs"] = root / "configs"
    paths["configs"].mkdir()
    c = paths["configs"]
    paths["negative_lr"] = tiny_config(c, tiny_encoder_folder, trained_runs["ar"], "lr.yaml", **{"decoder.learning_rate": -1.0})
    paths["nan_guidance"] = tiny_config(c, tiny_encoder_folder, trained_runs["ar"], "nan.yaml", **{"generation.guidance": 7.5})
    paths["nan_guidance"].write_text(paths["nan_guidance"].read_text().replace("guidance: 7.5", "guidance: .nan"))
    paths["inf_lr"] = tiny_config(c, tiny_encoder_folder, trained_runs["ar"], "inf.yaml", **{"diffusion.learning_rate": 0.5})
    paths["inf_lr"].write_text(paths["inf_lr"].read_text().replace("learning_rate: 0.5", "learning_rate: .inf"))
    paths["bad_val"] = tiny_config(c, tiny_encoder_folder, trained_runs["ar"], "val.yaml", **{"data.val_fraction": 1.0})
    paths["unknown_key"] = tiny_config(c, tiny_encoder_folder, trained_runs["ar"], "key.yaml", **{"decoder.soft_tokens": 4})
    paths["no_encoder"] = tiny_config(c, root / "no-such-encoder", trained_runs["ar"], "enc.yaml")
    paths["no_decoder"] = tiny_config(c, tiny_encoder_folder, root / "no-such-decoder", "dec.yaml")
    paths["masked_decoder"] = tiny_config(c, tiny_encoder_folder, trained_runs["masked"], "masked.yaml")
    paths["bad_progress_config"] = tiny_config(c, tiny_encoder_folder, trained_runs["ar"], "progress.yaml",
                                               out_dir=str(paths["bad_progress"]), **{"diffusion.steps": 4})
    paths["other_latent"] = tiny_config(c, tiny_encoder_folder, trained_runs["ar"], "latent.yaml", out_dir=str(run),
                                        **{"latent.d_model": 64})
    paths["not_yaml"] = c / "broken.yaml"
    paths["not_yaml"].write_text("data: {dataset: builtin\n")
    paths["list_yaml"] = c / "list.yaml"
    paths["list_yaml"].write_text("- 1\n- 2\n")
    return paths


MISSING = "{root}/no-such-run"
NO_CONFIG = "DGLM config file '{root}/none.yaml' does not exist; pass a YAML file such as configs/dglm/builtin.yaml"

# (case id, argv with {placeholders} from `env`, a piece of the expected message)
CASES = [
    # train-classifier
    ("clf-missing-run", ["dglm", "train-classifier", "--run", MISSING, "--data", "builtin:50", "--label", "sentiment"],
     "--run '{root}/no-such-run' does not exist; train it first"),
    ("clf-not-a-dglm-run", ["dglm", "train-classifier", "--run", "{ar}", "--data", "builtin:50", "--label", "sentiment"],
     "is not a DGLM run (no dglm_config.yaml)"),
    ("clf-run-and-config", ["dglm", "train-classifier", "--run", "{run}", "--config", "{config}", "--data", "builtin:50",
                            "--label", "sentiment"], "pass either --run"),
    ("clf-max-examples-0", ["dglm", "train-classifier", "--run", "{run}", "--data", "builtin:50", "--label", "sentiment",
                            "--max_examples", "0"], "--max_examples must be at least 1, got 0"),
    ("clf-negative-seed", ["dglm", "train-classifier", "--run", "{run}", "--data", "builtin:50", "--label", "sentiment",
                           "--seed", "-1"], "--seed must be between 0 and 4294967295, got -1"),
    ("clf-missing-data", ["dglm", "train-classifier", "--run", "{run}", "--data", "{root}/no-such.jsonl", "--label",
                          "sentiment"], "no-such.jsonl"),
    ("clf-unknown-label", ["dglm", "train-classifier", "--run", "{run}", "--data", "builtin:50", "--label", "colour"],
     "colour"),
    ("clf-out-under-a-file", ["dglm", "train-classifier", "--run", "{run}", "--data", "builtin:50", "--label",
                              "sentiment", "--out", "{file}/sentiment"], "is a file, not a folder"),
    ("clf-missing-config", ["dglm", "train-classifier", "--config", "{root}/none.yaml", "--data", "builtin:50",
                            "--label", "sentiment"], NO_CONFIG),
    ("clf-bad-int", ["dglm", "train-classifier", "--run", "{run}", "--data", "builtin:50", "--label", "sentiment",
                     "--max_examples", "many"], "invalid int value: 'many'"),
    # generate: flags
    ("gen-num-samples-0", ["dglm", "generate", "--run", "{run}", "--num_samples", "0"],
     "--num_samples must be at least 1, got 0"),
    ("gen-guidance-nan", ["dglm", "generate", "--run", "{run}", "--guidance", "nan"],
     "--guidance must be at least 0 (a finite number), got nan"),
    ("gen-guidance-negative", ["dglm", "generate", "--run", "{run}", "--guidance", "-1"],
     "--guidance must be at least 0, got -1.0"),
    ("gen-cfg-scale-inf", ["dglm", "generate", "--run", "{run}", "--cfg_scale", "inf"],
     "--cfg_scale must be a finite number, got inf"),
    ("gen-renoise-level", ["dglm", "generate", "--run", "{run}", "--renoise_level", "1.5"],
     "--renoise_level must be in [0, 1], got 1.5"),
    ("gen-eta", ["dglm", "generate", "--run", "{run}", "--eta", "-0.1"], "--eta must be in [0, 1], got -0.1"),
    ("gen-temperature", ["dglm", "generate", "--run", "{run}", "--temperature", "-1"],
     "--temperature must be at least 0, got -1.0"),
    ("gen-max-tokens", ["dglm", "generate", "--run", "{run}", "--max_tokens", "0"], "--max_tokens must be at least 1, got 0"),
    ("gen-num-steps", ["dglm", "generate", "--run", "{run}", "--num_steps", "-3"], "--num_steps must be at least 1, got -3"),
    ("gen-seed", ["dglm", "generate", "--run", "{run}", "--seed", "99999999999"], "--seed must be between 0 and"),
    ("gen-bad-int", ["dglm", "generate", "--run", "{run}", "--num_samples", "two"], "invalid int value: 'two'"),
    ("gen-bad-sampler", ["dglm", "generate", "--run", "{run}", "--sampler", "euler"], "invalid choice: 'euler'"),
    ("gen-bad-precision", ["dglm", "generate", "--run", "{run}", "--precision", "fp16"], "invalid choice: 'fp16'"),
    ("gen-bad-device", ["dglm", "generate", "--run", "{run}", "--device", "tpu"], "unknown device 'tpu'"),
    # generate: controls
    ("gen-control-no-value", ["dglm", "generate", "--run", "{run}", "--control", "sentiment"],
     "--control 'sentiment' must look like attribute=value"),
    ("gen-control-no-name", ["dglm", "generate", "--run", "{run}", "--control", "=positive"],
     "--control '=positive' must look like attribute=value"),
    ("gen-control-no-classifier", ["dglm", "generate", "--run", "{run}", "--control", "topic=food"],
     "no classifier for 'topic'"),
    ("gen-control-dotdot", ["dglm", "generate", "--run", "{run}", "--control", "..=x"], "no classifier for '..'"),
    ("gen-control-path", ["dglm", "generate", "--run", "{run}", "--control", "../../etc/x=y"],
     "no classifier for '../../etc/x'"),
    ("gen-control-bad-value", ["dglm", "generate", "--run", "{run}", "--control", "sentiment=ecstatic"],
     "has no value 'ecstatic'"),
    ("gen-prefix-too-long", ["dglm", "generate", "--run", "{run}", "--prefix", " ".join(["the"] * 40)], "longer than"),
    # generate: run folders
    ("gen-missing-run", ["dglm", "generate", "--run", MISSING], "'{root}/no-such-run' does not exist; train one"),
    ("gen-not-a-dglm-run", ["dglm", "generate", "--run", "{ar}"], "holds no DGLM run (no dglm_config.yaml)"),
    ("gen-damaged-latent", ["dglm", "generate", "--run", "{bad_latent}"], "model.safetensors' is damaged"),
    ("gen-damaged-latent-meta", ["dglm", "generate", "--run", "{bad_latent_meta}"], "latent diffusion stage"),
    ("gen-damaged-decoder", ["dglm", "generate", "--run", "{bad_decoder}"], "decoder stage '{bad_decoder}/decoder' is damaged"),
    ("gen-damaged-run-config", ["dglm", "generate", "--run", "{bad_yaml}"], "is not valid YAML"),
    ("gen-bad-run-config-value", ["dglm", "generate", "--run", "{bad_config_value}"],
     "'generation.num_steps' must be at least 1, got 0"),
    ("gen-damaged-classifier", ["dglm", "generate", "--run", "{bad_classifier}", "--control", "sentiment=positive"],
     "classifier '{bad_classifier}/classifiers/sentiment' is missing or damaged"),
    # eval
    ("eval-guidance-nan", ["dglm", "eval", "--run", "{run}", "--label", "sentiment", "--guidance", "0,nan"],
     "--guidance must be comma-separated finite numbers of at least 0"),
    ("eval-guidance-empty", ["dglm", "eval", "--run", "{run}", "--label", "sentiment", "--guidance", ","],
     "--guidance must be comma-separated"),
    ("eval-guidance-words", ["dglm", "eval", "--run", "{run}", "--label", "sentiment", "--guidance", "0,high"],
     "got '0,high'"),
    ("eval-num-prefixes", ["dglm", "eval", "--run", "{run}", "--label", "sentiment", "--num_prefixes", "0"],
     "--num_prefixes must be at least 1, got 0"),
    ("eval-out-is-a-file", ["dglm", "eval", "--run", "{run}", "--label", "sentiment", "--out", "{file}"],
     "is a file, not a folder"),
    ("eval-no-classifier", ["dglm", "eval", "--run", "{run}", "--label", "topic", "--out", "{root}/eval-out"],
     "no classifier for 'topic'"),
    ("eval-missing-reference", ["dglm", "eval", "--run", "{run}", "--label", "sentiment", "--num_prefixes", "1",
                                "--guidance", "0", "--reference", "{root}/no-such-ar", "--out", "{root}/eval-out"],
     "reference model: backbone folder '{root}/no-such-ar' does not exist"),
    ("eval-bad-target", ["dglm", "eval", "--run", "{run}", "--label", "sentiment", "--target", "ecstatic",
                         "--out", "{root}/eval-out"], "ecstatic"),
    # train
    ("train-missing-config", ["dglm", "train", "--config", "{root}/none.yaml"], NO_CONFIG),
    ("train-config-not-yaml", ["dglm", "train", "--config", "{not_yaml}"], "is not valid YAML"),
    ("train-config-a-list", ["dglm", "train", "--config", "{list_yaml}"], "must hold a mapping of keys"),
    ("train-negative-lr", ["dglm", "train", "--config", "{negative_lr}"], "'decoder.learning_rate' must be positive, got -1.0"),
    ("train-nan-guidance", ["dglm", "train", "--config", "{nan_guidance}"], "'generation.guidance' must be"),
    ("train-inf-learning-rate", ["dglm", "train", "--config", "{inf_lr}"], "'diffusion.learning_rate' must be"),
    ("train-config-is-a-folder", ["dglm", "train", "--config", "{root}"], "is a folder, not a file"),
    ("train-val-fraction", ["dglm", "train", "--config", "{bad_val}"], "'data.val_fraction' must be"),
    ("train-unknown-key", ["dglm", "train", "--config", "{unknown_key}"], "unknown config key 'decoder.soft_tokens'"),
    ("train-out-dir-is-a-file", ["dglm", "train", "--config", "{config}", "--out_dir", "{file}"], "is a file, not a folder"),
    ("train-out-dir-under-a-file", ["dglm", "train", "--config", "{config}", "--out_dir", "{file}/run"],
     "is a file, not a folder"),
    ("train-out-dir-other-run", ["dglm", "train", "--config", "{config}", "--out_dir", "{ar}"],
     "is not empty and holds no DGLM run"),
    ("train-stage-without-embed", ["dglm", "train", "--config", "{config}", "--out_dir", "{root}/fresh", "--stage",
                                   "decoder"], "has no embed stage yet"),
    ("train-damaged-embed", ["dglm", "train", "--config", "{config}", "--out_dir", "{bad_embed}", "--stage", "diffusion"],
     "embed stage '{bad_embed}/embed' is damaged"),
    ("train-damaged-progress", ["dglm", "train", "--config", "{bad_progress_config}", "--stage", "diffusion"],
     "progress.json' is damaged"),
    ("train-resume-other-latent", ["dglm", "train", "--config", "{other_latent}", "--stage", "diffusion"],
     "was started with latent.d_model = 32, the config says 64"),
    ("train-missing-encoder", ["dglm", "train", "--config", "{no_encoder}", "--out_dir", "{root}/fresh"],
     "sentence encoder folder"),
    ("train-bad-stage", ["dglm", "train", "--config", "{config}", "--stage", "sample"], "invalid choice: 'sample'"),
    ("train-bad-precision", ["dglm", "train", "--config", "{config}", "--precision", "half"], "invalid choice: 'half'"),
    ("train-no-config", ["dglm", "train"], "the following arguments are required: --config"),
    # models check
    ("models-missing-config", ["models", "check", "--config", "{root}/none.yaml"], "configs/dglm/builtin.yaml"),
    ("models-missing-encoder", ["models", "check", "--config", "{no_encoder}"], "no-such-encoder' does not exist"),
    ("models-missing-decoder", ["models", "check", "--config", "{no_decoder}"],
     "auto_regressive_model_name: backbone folder '{root}/no-such-decoder' does not exist"),
    ("models-masked-decoder", ["models", "check", "--config", "{masked_decoder}"],
     "auto_regressive_model_name: checkpoint"),
    ("train-masked-decoder", ["dglm", "train", "--config", "{masked_decoder}", "--out_dir", "{no_decoder_stage}",
                              "--stage", "decoder"], "is a 'masked' model, but a 'ar' model is needed"),
    ("models-bad-device", ["models", "check", "--config", "{config}", "--device", "tpu"], "unknown device 'tpu'"),
]
if not torch.cuda.is_available():
    CASES.append(("train-no-gpu", ["dglm", "train", "--config", "{config}", "--device", "cuda"], "no CUDA GPU"))


def fill(text: str, env: dict[str, Path]) -> str:
    return text.format(**{k: str(v) for k, v in env.items()})


@pytest.mark.parametrize("argv, expected", [pytest.param(a, e, id=i) for i, a, e in CASES])
def test_a_bad_input_is_one_error_line_and_changes_nothing(env, capsys, argv, expected):
    argv = [fill(word, env) for word in argv]
    if "--prefix" not in argv and argv[:2] == ["dglm", "generate"]:
        argv += ["--prefix", "the chef", "--num_samples", "1"] if "--num_samples" not in argv else ["--prefix", "x"]
    watched = [env["run"], env["ar"], env["bad_progress"], env["bad_embed"], env["no_decoder_stage"]]
    before = [snapshot(folder) for folder in watched]
    root_before = sorted(p.name for p in env["root"].iterdir())
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse: a malformed flag
        code = exc.code
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err + out
    assert fill(expected, env) in lines[0]
    assert [snapshot(folder) for folder in watched] == before  # a run next to it stays byte for byte the same
    assert sorted(p.name for p in env["root"].iterdir()) == root_before  # no folder appeared (no-such-run, fresh, ...)


def test_train_classifier_keeps_a_path_like_label_inside_the_run(env, tmp_path, capsys):
    """`--label ../evil` names a column; the classifier file is <run>/classifiers/_evil, and
    `--control ../evil=...` finds it there."""
    run = tmp_path / "run"
    shutil.copytree(env["run"], run)
    rows = [{"text": f"the food was {w} and the service was {w} .", "../evil": m}
            for w, m in (("great", "pos"), ("awful", "neg"), ("lovely", "pos"), ("bland", "neg"))] * 8
    data = tmp_path / "evil.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    outside = sorted(p.name for p in tmp_path.iterdir())
    assert main(["dglm", "train-classifier", "--run", str(run), "--data", str(data), "--label", "../evil"]) == 0
    assert (run / "classifiers" / "_evil.json").is_file() and (run / "classifiers" / "_evil.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == outside  # nothing written beside the run
    assert json.loads((run / "classifiers" / "_evil.json").read_text())["attribute"] == "../evil"
    capsys.readouterr()
    assert main(["dglm", "generate", "--run", str(run), "--prefix", "the chef", "--num_samples", "1",
                 "--control", "../evil=pos"]) == 0
    assert capsys.readouterr().out.startswith("the chef")


def test_train_classifier_into_a_missing_run_creates_nothing(env, tmp_path, capsys):
    missing = tmp_path / "nowhere" / "run"
    assert main(["dglm", "train-classifier", "--run", str(missing), "--data", "builtin:50", "--label", "sentiment"]) == 2
    err = capsys.readouterr().err
    assert "train it first" in err and "--config" in err
    assert not (tmp_path / "nowhere").exists()
