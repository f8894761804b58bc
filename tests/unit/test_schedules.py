"""Contract tests run over every registered noise schedule."""

from __future__ import annotations

import pytest
import torch

from dlms.errors import ConfigError
from dlms.schedules import SCHEDULES, MaskingSchedule, build_schedule, schedule_names

NAMES = schedule_names("masking")  # the gaussian ones: tests/unit/test_gaussian.py
GRID = torch.linspace(0.0, 1.0, 1001, dtype=torch.float64)
INTERIOR = torch.linspace(0.01, 0.99, 99, dtype=torch.float64)


def test_registry_is_not_empty():
    # The parametrised tests below would silently pass on an empty registry.
    assert {"loglinear", "cosine", "linear"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_endpoints(name):
    s = build_schedule(name)
    a0 = s.alpha(torch.zeros(1, dtype=torch.float64)).item()
    a1 = s.alpha(torch.ones(1, dtype=torch.float64)).item()
    assert a0 == pytest.approx(1.0, abs=1e-3), f"{name}: alpha(0)={a0}"
    assert 0.0 <= a1 < 1e-3, f"{name}: alpha(1)={a1}"


@pytest.mark.parametrize("name", NAMES)
def test_alpha_in_unit_interval_and_decreasing(name):
    a = build_schedule(name).alpha(GRID)
    assert a.shape == GRID.shape
    assert torch.all((a >= 0) & (a <= 1))
    diffs = a[1:] - a[:-1]
    assert torch.all(diffs < 0), f"{name}: alpha is not strictly decreasing on the grid"


@pytest.mark.parametrize("name", NAMES)
def test_alpha_prime_matches_finite_difference(name):
    s = build_schedule(name)
    h = 1e-6
    fd = (s.alpha(INTERIOR + h) - s.alpha(INTERIOR - h)) / (2 * h)
    ap = s.alpha_prime(INTERIOR)
    assert ap.shape == INTERIOR.shape
    torch.testing.assert_close(ap, fd, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_elbo_weight_nonnegative_and_consistent(name):
    s = build_schedule(name)
    w = s.elbo_weight(INTERIOR)
    assert torch.all(torch.isfinite(w)) and torch.all(w >= 0)
    torch.testing.assert_close(w, -s.alpha_prime(INTERIOR) / (1 - s.alpha(INTERIOR)))


@pytest.mark.parametrize("name", NAMES)
def test_mask_prob_is_one_minus_alpha(name):
    s = build_schedule(name)
    torch.testing.assert_close(s.mask_prob(GRID), 1 - s.alpha(GRID))
    # Works on float32 batches too (what the methods pass) and keeps the shape.
    t = torch.rand(7)
    assert s.mask_prob(t).shape == (7,) and s.mask_prob(t).dtype == torch.float32


@pytest.mark.parametrize("name", NAMES)
def test_is_a_masking_schedule(name):
    assert isinstance(build_schedule(name), MaskingSchedule)


def test_loglinear_is_one_minus_t():
    s = build_schedule("loglinear")
    torch.testing.assert_close(s.alpha(GRID), 1 - GRID)
    torch.testing.assert_close(s.elbo_weight(INTERIOR), 1 / INTERIOR)


def test_unknown_schedule_names_the_known_ones():
    with pytest.raises(ConfigError) as info:
        build_schedule("no-such-schedule")
    msg = str(info.value)
    assert "no-such-schedule" in msg
    for name in SCHEDULES.names():
        assert name in msg
