"""The built-in transformer: shapes, causality, KV cache, conditioning, `select`, config resolution."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from dlms.backbones import PRESETS, resolve_model_config
from dlms.config import ModelConfig
from dlms.errors import ConfigError
from tests.backbone_helpers import L, V, ids, perturb_modulation, tiny


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_resolution_fills_sizes(preset):
    cfg = resolve_model_config(ModelConfig(preset=preset), seq_len=48, causal=False)
    for key, value in PRESETS[preset].items():
        assert getattr(cfg, key) == value
    assert cfg.max_seq_len == 48 and cfg.causal is False
    assert cfg.d_model % cfg.n_heads == 0


def test_explicit_sizes_override_preset():
    cfg = resolve_model_config(ModelConfig(preset="tiny", d_model=32, n_heads=4, max_seq_len=64),
                               seq_len=16, causal=True)
    assert (cfg.d_model, cfg.n_heads, cfg.n_layers, cfg.max_seq_len, cfg.causal) == (32, 4, PRESETS["tiny"]["n_layers"], 64, True)


@pytest.mark.parametrize("causal", [False, True])
def test_forward_shapes(causal):
    model = tiny(causal)
    x = ids(3)
    with torch.no_grad():
        assert model(x).shape == (3, L, V)
        assert model.hidden(x).shape == (3, L, PRESETS["tiny"]["d_model"])
        assert model(x[:, :4]).shape == (3, 4, V)


def test_too_long_input_is_an_error():
    model = tiny(False)
    with pytest.raises(ValueError, match="max_seq_len"):
        model(ids(1, L + 1))


def test_extended_positions_accept_longer_input_and_keep_the_trained_ones():
    model = tiny(True)
    x = ids(2, L + 5)
    with torch.no_grad():
        before = model(x[:, :L])
        model.extend_positions(L + 5)
        assert model.spec.max_seq_len == L + 5
        after = model(x)
    assert after.shape == (2, L + 5, V)
    assert torch.allclose(after[:, :L], before, atol=1e-5)  # causal: the first L positions are unchanged


def test_causal_output_does_not_see_the_future():
    model = tiny(True)
    x = ids(2)
    y = x.clone()
    y[:, 6:] = (y[:, 6:] + 1) % V
    with torch.no_grad():
        a, b = model(x), model(y)
    torch.testing.assert_close(a[:, :6], b[:, :6], rtol=0, atol=1e-5)
    assert (a[:, 6:] - b[:, 6:]).abs().max() > 1e-4


def test_bidirectional_first_position_sees_last_token():
    model = tiny(False)
    x = ids(2)
    y = x.clone()
    y[:, -1] = (y[:, -1] + 1) % V
    with torch.no_grad():
        a, b = model(x), model(y)
    assert (a[:, 0] - b[:, 0]).abs().max() > 1e-5


def test_kv_cache_incremental_decoding_equals_full_forward():
    model = tiny(True)
    x = ids(2)
    with torch.no_grad():
        full = model(x)
        cache = model.new_cache(2, L, torch.device("cpu"), torch.float32)
        parts = [model(x[:, :4], cache=cache)]  # a prompt of 4 tokens at once
        parts.append(model(x[:, 4:6], cache=cache))  # two tokens at once after the cache
        for pos in range(6, L):  # then one at a time
            parts.append(model(x[:, pos : pos + 1], cache=cache))
    assert cache.length == L
    inc = torch.cat(parts, dim=1)
    assert (inc - full).abs().max() < 1e-4


def test_time_conditioning_zero_init_then_depends_on_t():
    model = tiny(False, time_conditioning=True)
    x = ids(2)
    t0, t1 = torch.full((2,), 0.1), torch.full((2,), 0.9)
    with torch.no_grad():
        # Zero-initialised modulation: a new model starts unconditioned.
        torch.testing.assert_close(model(x, time=t0), model(x, time=t1))
        perturb_modulation(model)
        a, b = model(x, time=t0), model(x, time=t1)
    assert (a - b).abs().max() > 1e-4


def test_time_conditioned_model_requires_time():
    model = tiny(False, time_conditioning=True)
    with pytest.raises(ValueError, match="time"):
        model(ids(1))


def test_unconditioned_model_output_ignores_time_argument():
    model = tiny(False)
    x = ids(2)
    with torch.no_grad():
        torch.testing.assert_close(model(x, time=torch.full((2,), 0.2)), model(x, time=torch.full((2,), 0.8)))


def test_class_conditioning_depends_on_labels_once_modulation_is_nonzero():
    model = tiny(False, num_classes=3)
    assert model.null_class == 3
    x = ids(2)
    with torch.no_grad():
        perturb_modulation(model)
        a = model(x, labels=torch.tensor([0, 0]))
        b = model(x, labels=torch.tensor([1, 1]))
        null = model(x)  # no labels: the null class
        explicit_null = model(x, labels=torch.full((2,), model.null_class))
    assert (a - b).abs().max() > 1e-4
    torch.testing.assert_close(null, explicit_null)


@pytest.mark.parametrize("time_conditioning", [False, True])
def test_labels_without_class_conditioning_are_an_error(time_conditioning):
    # A time-only conditioned model used to ignore labels silently (guidance became a no-op).
    model = tiny(False, time_conditioning=time_conditioning)
    with pytest.raises(ValueError, match="num_classes"):
        model(ids(1), time=torch.full((1,), 0.5), labels=torch.tensor([0]))


@pytest.mark.parametrize("causal", [False, True])
def test_select_returns_the_selected_logits(causal):
    model = tiny(causal)
    x = ids(3)
    g = torch.Generator().manual_seed(5)
    select = torch.rand(3, L, generator=g) < 0.4
    select[0, 0] = True
    with torch.no_grad():
        full = model(x)
        part = model(x, select=select)
    assert part.shape == (int(select.sum()), V)
    torch.testing.assert_close(part, full[select])
    with torch.no_grad():
        assert model(x, select=torch.zeros_like(select)).shape == (0, V)


def test_tied_embeddings():
    model = tiny(False)
    h = torch.randn(4, PRESETS["tiny"]["d_model"])
    torch.testing.assert_close(model.logits(h), h @ model.embed.weight.t())


def test_resolve_errors():
    with pytest.raises(ConfigError, match="max_seq_len"):
        resolve_model_config(ModelConfig(preset="tiny", max_seq_len=8), seq_len=16, causal=False)
    with pytest.raises(ConfigError, match="causal"):
        resolve_model_config(ModelConfig(preset="tiny", causal=True), seq_len=16, causal=False)
    with pytest.raises(ConfigError, match="causal"):
        resolve_model_config(ModelConfig(preset="tiny", causal=False), seq_len=16, causal=True)
    with pytest.raises(ConfigError, match="backbone"):
        resolve_model_config(replace(ModelConfig(preset="tiny"), backbone="nope"), seq_len=16, causal=False)
    # Matching causality is fine.
    assert resolve_model_config(ModelConfig(preset="tiny", causal=True), seq_len=16, causal=True).causal is True
