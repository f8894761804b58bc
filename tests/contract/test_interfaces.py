"""The declared interfaces, over every registered part: each method subclasses `Method` and names
its options dataclass, registered under the same name; each method's options load flat from a
`method:` section, refuse another method's, and are all a saved run writes; each backbone kind
resolves and builds; and nothing in the library probes a method with getattr / hasattr."""
from __future__ import annotations

import ast
import dataclasses
import inspect
import re
from pathlib import Path

import pytest
import torch
import yaml

import dlms
from dlms.backbones import BACKBONES, HUGGING_FACE, BackboneKind, backbone_kind, build_backbone, resolve_model_config
from dlms.config import ModelConfig, RunConfig, config_from_dict, save_config
from dlms.errors import ConfigError
from dlms.method_options import METHOD_OPTIONS, MethodConfig, methods_with, option_names
from dlms.methods import METHODS, Method

SRC = Path(dlms.__file__).parent


# ---------------------------------------------------------------------- methods


def test_every_method_has_registered_options():
    assert METHODS.names() == METHOD_OPTIONS.names()


@pytest.mark.parametrize("name", METHODS.names())
def test_a_method_declares_the_interface(name):
    cls = METHODS.get(name)
    assert issubclass(cls, Method) and not inspect.isabstract(cls)
    assert cls.name == name and cls.options is METHOD_OPTIONS.get(name)
    assert issubclass(cls.options, MethodConfig) and cls.options().name == name
    assert isinstance(cls.causal, bool) and isinstance(cls.stochastic_bound, bool)
    assert isinstance(cls.default_sampler, str)
    # A discrete-time bound is a kind of Monte Carlo bound; an exact likelihood has none.
    assert not cls.supports_discrete_bound or cls.stochastic_bound


def _probes(root: Path = SRC) -> list[str]:
    """getattr / hasattr calls in the files under `root` whose object looks like a method (its text names one) or
    whose attribute is a name `Method` declares."""
    declared = {n for n in dir(Method) if not n.startswith("_")} | set(Method.__annotations__)
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id in ("getattr", "hasattr") and len(node.args) >= 2):
                continue
            target, attr = ast.unparse(node.args[0]), node.args[1]
            named = isinstance(attr, ast.Constant) and attr.value in declared - {"name"}
            if re.search(r"method", target, re.IGNORECASE) or named:
                found.append(f"{path.relative_to(root)}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_nothing_probes_a_method_with_getattr_or_hasattr():
    assert _probes() == []


def test_the_probe_finder_finds_probes(tmp_path):
    """The finder above is not vacuous: it flags the forms the library used to have."""
    (tmp_path / "probe.py").write_text('getattr(self.method, "decoding_block", None)\n'
                                       'hasattr(cls, "check_run_config")\nhasattr(x, "name")\n')
    assert [line.split(": ", 1)[1] for line in _probes(tmp_path)] == [
        "getattr(self.method, 'decoding_block', None)", "hasattr(cls, 'check_run_config')"]


# ---------------------------------------------------------------------- each method's options


@pytest.mark.parametrize("name", METHOD_OPTIONS.names())
def test_a_method_section_is_its_options_and_saves_only_them(name, tmp_path):
    cfg = config_from_dict({"method": {"name": name}})
    assert type(cfg.method) is METHOD_OPTIONS.get(name) and cfg.method == METHOD_OPTIONS.get(name)()
    save_config(cfg, tmp_path / "config.yaml")
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())["method"]
    assert list(saved) == option_names(name)
    assert config_from_dict(yaml.safe_load((tmp_path / "config.yaml").read_text())) == cfg


FOREIGN = [(name, key) for name in METHOD_OPTIONS.names()
           for key in sorted({k for n in METHOD_OPTIONS.names() for k in option_names(n)} - set(option_names(name)))]


@pytest.mark.parametrize("name, key", FOREIGN, ids=["-".join(p) for p in FOREIGN])
def test_another_methods_option_is_one_error_naming_its_methods(name, key):
    default = dataclasses.asdict(METHOD_OPTIONS.get(methods_with(key)[0])())[key]
    with pytest.raises(ConfigError) as info:
        config_from_dict({"method": {"name": name, key: default}})  # even at its default: it does not apply
    message = str(info.value)
    assert "\n" not in message and f"'method.{key}'" in message and f"method '{name}'" in message
    assert f"an option of {', '.join(methods_with(key))})" in message and f"drop method.{key}" in message


# ---------------------------------------------------------------------- backbones


def test_a_registered_name_is_its_own_kind_and_anything_else_goes_to_hugging_face(tmp_path):
    for name in BACKBONES.names():
        assert backbone_kind(name) is BACKBONES.get(name) and isinstance(BACKBONES.get(name), BackboneKind)
    for other in (str(tmp_path), "Qwen/Qwen2.5-0.5B", "gpt2"):
        assert backbone_kind(other) is HUGGING_FACE and HUGGING_FACE.pretrained


@pytest.mark.parametrize("name", BACKBONES.names())
def test_a_registered_backbone_kind_resolves_and_builds(name):
    kind = BACKBONES.get(name)
    cfg = resolve_model_config(ModelConfig(backbone=name, preset="tiny"), seq_len=8, causal=False)
    assert cfg.max_seq_len == 8 and cfg.causal is False and kind.embedding_width(cfg) == cfg.d_model
    model = build_backbone(cfg, vocab_size=40)
    logits = model(torch.randint(0, 40, (2, 8)))
    assert logits.shape == (2, 8, 40)


def test_the_default_backbone_is_registered():
    assert RunConfig().model.backbone in BACKBONES
