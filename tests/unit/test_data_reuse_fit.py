"""The data-reuse fit (experiments/data_reuse_fit.py): it recovers a known law, and the
crossover compute is read where the curves cross."""
import math

import numpy as np
import pytest

from dlms.experiments.data_reuse_fit import (ReuseFit, analyse, crossover_budget, doubling_rate_crossover,
                                             effective_tokens, fit_reuse, fitted_crossover, measured_crossover,
                                             running_minimum)

BUDGETS = (10_000, 30_000, 100_000)


def law(family: str, floor: float, scale: float, exponent: float, r_star: float) -> ReuseFit:
    return ReuseFit(family, "s", 1000, floor, scale, exponent, r_star, 0.0, 0.0, 0)


def points_of(fit: ReuseFit, epochs: float = 200) -> list[tuple[float, float, float]]:
    return [(float(d), float(u), float(fit.loss(d, u))) for u in BUDGETS
            for d in np.geomspace(u / 2, u * epochs, 25)]


def test_effective_tokens_count_fresh_data_fully_and_repeats_less_and_less():
    u = np.array([100.0])
    assert effective_tokens(np.array([50.0]), u, 10.0)[0] == pytest.approx(50.0)  # within the first epoch
    assert effective_tokens(np.array([200.0]), u, 10.0)[0] == pytest.approx(100 + 1000 * (1 - math.exp(-0.1)))
    assert effective_tokens(np.array([1e9]), u, 10.0)[0] == pytest.approx(100 * 11)  # the ceiling U (1 + R*)


@pytest.mark.parametrize("r_star", [3.0, 60.0])
def test_the_fit_recovers_the_half_life_of_a_known_law(r_star):
    truth = law("ar", 2.0, 40.0, 0.35, r_star)
    fit = fit_reuse(points_of(truth), "ar", "s", 1000)
    assert fit is not None and fit.rmse < 1e-3
    assert fit.r_star == pytest.approx(r_star, rel=0.1)
    assert fit.half_life == pytest.approx(r_star * math.log(2), rel=0.1)


def test_one_budget_or_few_points_are_not_fitted():
    truth = law("ar", 2.0, 40.0, 0.35, 10.0)
    assert fit_reuse([p for p in points_of(truth) if p[1] == BUDGETS[0]], "ar", "s", 1000) is None
    assert fit_reuse(points_of(truth)[::20], "ar", "s", 1000) is None


def test_running_minimum_never_rises():
    curve = [{"epoch": e, "val_nll": v} for e, v in [(1, 5.0), (2, 4.0), (3, 4.5), (4, 3.9)]]
    assert [p[2] for p in running_minimum(curve, 100)] == [5.0, 4.0, 4.0, 3.9]
    assert [p[0] for p in running_minimum(curve, 100)] == [100, 200, 300, 400]


def test_measured_crossover_is_where_masked_goes_below_ars_best_so_far_for_good():
    ar = [(100.0, 10.0, 3.0), (200.0, 10.0, 2.5)]  # then stopped: its best holds
    masked = [(100.0, 10.0, 2.9), (300.0, 10.0, 2.6), (900.0, 10.0, 2.4), (1200.0, 10.0, 2.3)]
    assert measured_crossover(masked, ar) == 900.0  # ahead at first (unigram), behind, then ahead to the end
    assert measured_crossover(masked[:2], ar) is None


def test_a_family_that_reuses_data_longer_overtakes_below_a_budget():
    ar = law("ar", 2.0, 40.0, 0.35, 3.0)  # learns fast, stops gaining from repeats early
    masked = law("masked", 2.2, 60.0, 0.35, 100.0)  # worse on fresh data, reuses it much longer
    relation, budget = crossover_budget(masked, ar, 1e2, 1e10)
    assert relation == "below"
    assert masked.limit(budget / 2) < ar.limit(budget / 2) and masked.limit(budget * 2) > ar.limit(budget * 2)
    small, large = budget / 10, budget * 10
    tokens = fitted_crossover(masked, ar, small, small)
    assert tokens is not None and masked.loss(tokens * 1.01, small) < ar.loss(tokens * 1.01, small)
    assert fitted_crossover(masked, ar, large, large) is None
    higher = law("x", 3.0, 40.0, 0.35, 3.0)  # a higher floor at every budget
    assert crossover_budget(higher, ar, 1e2, 1e10) == ("none", None)
    assert crossover_budget(ar, higher, 1e2, 1e10) == ("all", None)
    relation, budget = crossover_budget(ar, masked, 1e2, 1e10)  # the other way round: ar's floor wins below
    assert relation == "above" and budget == pytest.approx(crossover_budget(masked, ar, 1e2, 1e10)[1], rel=0.01)


def test_analyse_reads_the_best_variant_curves_of_each_family():
    ar, masked = law("ar", 2.0, 40.0, 0.35, 3.0), law("masked", 2.2, 60.0, 0.35, 100.0)
    best, curves = [], []
    for fit in (ar, masked):
        for u in BUDGETS:
            cell = f"{fit.family}-s-U{u}"
            best.append({"cell": cell, "family": fit.family, "size": "s", "unique_tokens": str(u),
                         "unique_tokens_used": str(u), "parameters": "1000"})
            curves += [{"cell": cell, "epoch": e, "val_nll": float(fit.loss(e * u, u))}
                       for e in np.geomspace(0.5, 300, 30)]
    result = analyse(best, curves, min_tokens=0)
    fits = {f.family: f for f in result["fits"]}
    assert fits["ar"].r_star == pytest.approx(3.0, rel=0.1) and fits["masked"].r_star == pytest.approx(100, rel=0.1)
    relation, budget = result["budgets"]["s"]
    assert relation == "below" and budget == pytest.approx(crossover_budget(masked, ar, 1e2, 1e10)[1], rel=0.05)
    by_budget = {c["unique_tokens"]: c for c in result["crossovers"]}
    assert set(by_budget) == set(BUDGETS)
    for u, c in by_budget.items():
        if c["fitted"] is not None:  # past the fitted crossover, masked's fitted loss is the lower
            assert masked.loss(c["fitted"] * 1.01, u) < ar.loss(c["fitted"] * 1.01, u)
        assert c["fits_poor"] is False and c["parameters"] == 1000


def test_the_doubling_rate_estimate_extends_the_last_doubling():
    masked = [(100.0, 10.0, 5.0), (200.0, 10.0, 4.5), (400.0, 10.0, 4.0)]  # 0.5 nats per doubling
    assert doubling_rate_crossover(masked, 3.0) == pytest.approx(1600.0)  # two more doublings
    assert doubling_rate_crossover(masked, 4.2) == 400.0  # already there
    assert doubling_rate_crossover([(100.0, 10.0, 4.0), (400.0, 10.0, 4.0)], 3.0) is None  # not falling
    assert doubling_rate_crossover([(300.0, 10.0, 4.0), (400.0, 10.0, 3.9)], 3.0) is None  # no doubling measured


def test_the_report_marks_a_poor_fit_and_says_where_masked_wins():
    from dlms.experiments.data_reuse_fit import report_lines

    good, poor = law("ar", 2.0, 40.0, 0.35, 3.0), law("masked", 2.2, 60.0, 0.35, 100.0)
    poor.rmse = 0.2
    text = "\n".join(report_lines({"fits": [good, poor], "unfitted": [], "budgets": {"s": ("below", 12345.0)},
                                   "crossovers": [{"size": "s", "unique_tokens": 1000, "parameters": 10,
                                                   "measured": None, "fitted": 5e5, "fits_poor": True,
                                                   "doubling_rate": 2e6, "masked_end": 4.5, "ar_best": 4.2,
                                                   "measured_to_epochs": 40.0}]}))
    assert "| 0.200 (poor) |" in text and "| 0.000 |" in text
    assert "below about **12,345 tokens**. A fit of this size is poor" in text
    assert ("| s | 1,000 | 40 | 4.500, 4.200 | none | 5e+05 tokens (500 epochs, 3.0e+07 FLOPs) (poor fits) | "
            "2e+06 tokens (2e+03 epochs, 1.2e+08 FLOPs) |") in text


def test_curves_are_fitted_from_where_they_leave_their_first_plateau():
    from dlms.experiments.data_reuse_fit import after_take_off

    plateau_then_drop = [(100.0, 10.0, 5.2), (200.0, 10.0, 5.15), (400.0, 10.0, 5.0), (800.0, 10.0, 4.5)]
    assert after_take_off(plateau_then_drop) == plateau_then_drop[2:]
    assert after_take_off([(100.0, 10.0, 5.2), (200.0, 10.0, 5.1)]) == []  # never left it
    ar, masked = law("ar", 2.0, 40.0, 0.35, 3.0), law("masked", 2.2, 60.0, 0.35, 100.0)
    assert ar.reliable
    masked.log_r_star_se = 3.0  # R* known only to within e^3
    assert not masked.reliable
