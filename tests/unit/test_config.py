"""The config schema: defaults, YAML + dotted overrides, unknown keys and wrong types, round trip."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from dlms.config import RunConfig, config_from_dict, load_config, save_config
from dlms.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
CONFIG_FILES = sorted((REPO / "configs").glob("*.yaml"))  # run configs; experiment specs below


def test_defaults_load():
    cfg = load_config()
    assert cfg == RunConfig()
    assert cfg.method.name == "masked" and cfg.method.schedule == "auto"
    assert cfg.train.batch_size == 64 and cfg.model.preset == "small"
    assert config_from_dict({}) == RunConfig()


def test_yaml_file_then_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(
        "method:\n  name: ar\nmodel:\n  preset: tiny\ntrain:\n  batch_size: 8\n  learning_rate: 0.01\n",
        encoding="utf-8",
    )
    cfg = load_config(path)
    assert cfg.method.name == "ar" and cfg.model.preset == "tiny"
    assert cfg.train.batch_size == 8 and cfg.train.learning_rate == 0.01
    assert cfg.train.max_steps == RunConfig().train.max_steps  # untouched keys keep defaults

    cfg = load_config(path, ["train.batch_size=16", "model.causal=true", "data.tokenizer=null", "sample.top_p=0.9"])
    assert cfg.train.batch_size == 16  # the override wins over the file
    assert cfg.train.learning_rate == 0.01  # the file wins over the defaults
    assert cfg.model.causal is True and cfg.data.tokenizer is None and cfg.sample.top_p == 0.9


def test_named_flags_win_over_dotted_overrides_and_the_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  batch_size: 8\n  max_steps: 5\n  warmup_steps: 3\n", encoding="utf-8")
    cfg = load_config(path, ["train.max_steps=7", "train.batch_size=2"], extra={"train": {"batch_size": 4}})
    assert cfg.train.batch_size == 4 and cfg.train.max_steps == 7 and cfg.train.warmup_steps == 3


@pytest.mark.parametrize(
    "data, key",
    [
        ({"bogus": {}}, "bogus"),
        ({"train": {"batch_sise": 3}}, "train.batch_sise"),
        ({"model": {"preset": "tiny", "layers": 2}}, "model.layers"),
    ],
)
def test_unknown_key_is_named(data, key):
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    assert f"'{key}'" in str(info.value)


def test_unknown_override_key_is_named():
    with pytest.raises(ConfigError, match="train.nope"):
        load_config(overrides=["train.nope=1"])
    with pytest.raises(ConfigError, match="bogus"):
        load_config(overrides=["bogus.x=1"])


def test_unknown_key_in_yaml_file_is_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  batch_size: 8\n  lr: 0.1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="train.lr"):
        load_config(path)


@pytest.mark.parametrize(
    "override, key",
    [
        ('train.batch_size="x"', "train.batch_size"),
        ("train.batch_size=x", "train.batch_size"),
        ("train.batch_size=true", "train.batch_size"),  # a bool is not an int
        ("train.batch_size=1.5", "train.batch_size"),
        ("train.learning_rate=false", "train.learning_rate"),  # nor a float
        ("model.preset=huge", "model.preset"),  # not one of the Literal's values
        ("method.name=gaussianx", "method.name"),
        ("model.causal=3", "model.causal"),
        ("data.tokenizer=5", "data.tokenizer"),
        ("train.progress=yes please", "train.progress"),
        ("model.d_model=[1, 2]", "model.d_model"),
    ],
)
def test_wrong_type_is_an_error(override, key):
    with pytest.raises(ConfigError) as info:
        load_config(overrides=[override])
    assert f"'{key}'" in str(info.value)


def test_literal_error_lists_allowed_values():
    with pytest.raises(ConfigError) as info:
        load_config(overrides=["model.preset=huge"])
    for allowed in ("tiny", "small", "base"):
        assert allowed in str(info.value)


def test_int_accepted_for_float_fields():
    cfg = load_config(overrides=["train.learning_rate=1", "train.num_epochs=2"])
    assert cfg.train.learning_rate == 1.0 and isinstance(cfg.train.learning_rate, float)
    assert cfg.train.num_epochs == 2.0 and isinstance(cfg.train.num_epochs, float)


def test_float_fields_accept_yaml_exponent_strings():
    # YAML 1.1 reads 3e-4 (no dot) as a string; float fields take it as a number.
    cfg = load_config(overrides=["train.learning_rate=3e-4", "method.eps=1E-5"])
    assert cfg.train.learning_rate == pytest.approx(3e-4) and isinstance(cfg.train.learning_rate, float)
    assert cfg.method.eps == pytest.approx(1e-5)
    for bad in ("train.learning_rate=fast", "train.learning_rate=3e", "train.learning_rate=1e-3x"):
        with pytest.raises(ConfigError, match="train.learning_rate"):
            load_config(overrides=[bad])
    with pytest.raises(ConfigError, match="train.batch_size"):
        load_config(overrides=["train.batch_size=1e3"])  # not for int fields


def test_section_must_be_a_mapping():
    with pytest.raises(ConfigError, match="train"):
        config_from_dict({"train": 5})
    with pytest.raises(ConfigError):
        load_config(overrides=["train.batch_size"])  # no '='


def test_missing_and_invalid_yaml_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    notmap = tmp_path / "list.yaml"
    notmap.write_text("- 1\n- 2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(notmap)


@pytest.mark.skipif(not CONFIG_FILES, reason="no YAML files in configs/")
@pytest.mark.parametrize("path", CONFIG_FILES, ids=[p.name for p in CONFIG_FILES])
def test_shipped_configs_load(path):
    assert isinstance(load_config(path), RunConfig)


EXPERIMENT_FILES = sorted((REPO / "configs" / "experiments").glob("*.yaml"))


@pytest.mark.parametrize("path", EXPERIMENT_FILES, ids=[p.name for p in EXPERIMENT_FILES])
def test_shipped_experiment_configs_load(path):
    from dlms.experiments import load_experiment

    exp = load_experiment(path)
    assert exp.cells() and exp.out_dir.parts[0] == "runs"


def test_save_then_load_round_trip(tmp_path):
    cfg = load_config(overrides=[
        "method.name=block", "method.eps=0.002", "method.block_size=8", "model.preset=tiny", "model.d_model=48", "model.causal=true",
        "data.tokenizer=gpt2", "data.max_examples=100", "train.batch_size=3", "train.num_epochs=1.5",
        "sample.tokens_per_step=4", "eval.max_batches=2",
    ])
    path = tmp_path / "config.yaml"
    save_config(cfg, path)
    again = load_config(path)
    assert again == cfg
    assert again != RunConfig()


# ---------------------------------------------------------------- each method's own options

# A run saved before each method had its own options: its method section holds every method's.
OLD_UNION = {"schedule": "loglinear", "antithetic": True, "eps": 0.001, "block_size": 4, "freeze_embeddings": False,
             "prefix_prob": 0.5, "mse_weight": 1.0, "embedding_norm": 1.0, "embed_dim": None, "logsnr_min": -10.0,
             "logsnr_max": 10.0, "input_mask_prob": 0.0}


def test_a_method_takes_only_its_own_options():
    cfg = load_config(overrides=["method.name=block", "method.block_size=8"])
    assert type(cfg.method).__name__ == "BlockOptions" and cfg.method.block_size == 8 and cfg.method.eps == 1e-3
    assert load_config(overrides=["method.name=gaussian", "method.logsnr_max=8"]).method.logsnr_max == 8.0
    with pytest.raises(ConfigError) as info:
        load_config(overrides=["method.block_size=8"])  # masked, the default method
    assert str(info.value) == ("config key 'method.block_size' does not apply to method 'masked' (it is an option "
                               "of block); drop method.block_size or set method.name=block")
    with pytest.raises(AttributeError):
        load_config().method.block_size  # noqa: B018 (not there: not silently a default)


def test_another_methods_option_in_a_yaml_file_is_an_error(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("method:\n  name: ar\n  schedule: cosine\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"'method.schedule' does not apply to method 'ar' \(it is an option of "
                                          r"block, gaussian, masked\); drop method.schedule or set method.name to one"):
        load_config(path)
    with pytest.raises(ConfigError, match="unknown config key 'method.bogus'.* known keys of method 'ar': "
                                          "input_mask_prob, name"):
        load_config(overrides=["method.name=ar", "method.bogus=1"])


def _old_run(tmp_path, name: str, **changed) -> Path:
    """A checkpoint folder whose config.yaml has the old union method section."""
    ckpt = tmp_path / "checkpoint"
    ckpt.mkdir()
    method = {"name": name, **OLD_UNION, **changed}
    (ckpt / "config.yaml").write_text(yaml.safe_dump({"method": method, "model": {"preset": "tiny"}}), "utf-8")
    return ckpt


@pytest.mark.parametrize("name", ["masked", "block", "gaussian", "ar"])
def test_a_saved_run_with_every_methods_options_still_loads(tmp_path, name):
    from dlms.checkpoint import read_config

    cfg = read_config(_old_run(tmp_path, name, schedule="auto" if name in ("ar", "gaussian") else "loglinear"))
    assert cfg.method.name == name and cfg.model.preset == "tiny"
    saved = tmp_path / "again.yaml"
    save_config(cfg, saved)
    kept = yaml.safe_load(saved.read_text())["method"]
    assert set(kept) == {f.name for f in dataclasses.fields(cfg.method)} and set(kept) < {"name", *OLD_UNION}


def test_a_saved_run_with_another_methods_option_changed_is_refused(tmp_path):
    from dlms.checkpoint import read_config
    from dlms.errors import CheckpointError

    with pytest.raises(CheckpointError, match=r"config key 'method.block_size' = 8 is an option of block, not of this "
                                              r"'masked' run, and not its default \(4\); remove it from config.yaml"):
        read_config(_old_run(tmp_path, "masked", block_size=8))


def test_a_saved_runs_leniency_is_not_a_user_configs(tmp_path):
    """The same old section written by hand is refused: only a saved run drops the other methods' keys."""
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"method": {"name": "masked", **OLD_UNION}}), encoding="utf-8")
    with pytest.raises(ConfigError, match="'method.block_size' does not apply to method 'masked'"):
        load_config(path)
