"""How much repeated data is worth to each family, fitted from the data-scaling validation
curves, and the compute at which masked diffusion overtakes AR.

The model is that of Muennighoff et al. (2023), used by Prabhudesai et al. (2025) to compare AR
and diffusion: after D training tokens on U unique tokens (R = D / U - 1 repetitions), the
tokens are worth as much as D' fresh ones,

    D' = min(D, U) + U * R* * (1 - exp(-R / R*)),

so the k-th repetition is worth exp(-k / R*) of a fresh epoch: R* is the data-reuse half-life
divided by ln 2. The best validation loss reached so far follows a data scaling law in D',

    L(D; U) = E + B / D'^beta,

fitted per (family, size) over the running minimum of every budget's validation curve (the
family's best regularisation variant per budget), after warm-up. One budget alone cannot tell
B and beta from R*: the budgets share the fresh-data part of the curve and part where they
repeat. Where the fitted floor L(inf; U) = E + B / (U (1 + R*))^beta of masked is below AR's,
masked overtakes AR at some compute; the crossover is read off the measured curves where it
happened and off the fitted ones where it did not. Training compute is 6 N D FLOPs (N the
parameters; attention's share is left out as it is small at these sizes and equal for both).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..reporting.plots import as_float, new_grid, save

FLOPS_PER_PARAMETER_TOKEN = 6  # forward and backward pass
POOR_FIT = 0.05  # nats/token of rmse above which a fit does not describe its curves
TAKE_OFF = 0.15  # nats/token below its first validation at which a curve has left its initial plateau
MAX_EPOCHS = 100_000  # the furthest a fitted crossover is looked for
EXTRAPOLATION = 100  # the fits are read at budgets up to this factor beyond the measured ones
Point = tuple[float, float, float]  # (training tokens D, unique tokens U, best loss so far)


def effective_tokens(tokens: np.ndarray, unique: np.ndarray, r_star: float) -> np.ndarray:
    """D' [n] of D tokens [n] trained on U unique tokens [n]: fresh tokens plus repetitions
    discounted by exp(-k / R*)."""
    repeats = np.maximum(tokens / unique - 1.0, 0.0)
    return np.minimum(tokens, unique) + unique * r_star * -np.expm1(-repeats / r_star)


@dataclass
class ReuseFit:
    """L(D; U) = E + B / D'(D, U, R*)^beta for one (family, size)."""

    family: str
    size: str
    parameters: int
    floor: float  # E
    scale: float  # B
    exponent: float  # beta
    r_star: float  # repetitions for a repeated epoch to fall to 1/e of a fresh one
    log_r_star_se: float  # standard error of ln R* (from the fit's Jacobian); inf when unidentified
    rmse: float
    points: int

    @property
    def reliable(self) -> bool:
        """The fit describes its curves (rmse) and pins R* down to within a factor e (1 se)."""
        return self.rmse <= POOR_FIT and self.log_r_star_se <= 1.0

    @property
    def half_life(self) -> float:
        """Repetitions after which an epoch is worth half a fresh one."""
        return self.r_star * math.log(2)

    def loss(self, tokens: np.ndarray | float, unique: np.ndarray | float) -> np.ndarray:
        tokens, unique = np.asarray(tokens, dtype=float), np.asarray(unique, dtype=float)
        return self.floor + self.scale / effective_tokens(tokens, unique, self.r_star) ** self.exponent

    def limit(self, unique: float) -> float:
        """The loss this family reaches on U unique tokens with unlimited repetitions."""
        return self.floor + self.scale / (unique * (1.0 + self.r_star)) ** self.exponent


def running_minimum(curve: list[dict[str, Any]], unique_used: float) -> list[Point]:
    """(D, U, best loss so far) after each validation of one run's curve (rows of curves.csv)."""
    points, best = [], math.inf
    for p in sorted(curve, key=lambda p: as_float(p["epoch"])):
        best = min(best, as_float(p["val_nll"]))
        points.append((as_float(p["epoch"]) * unique_used, unique_used, best))
    return points


def fit_reuse(points: list[Point], family: str, size: str, parameters: int) -> ReuseFit | None:
    """Least-squares fit of (E, B, beta, R*) to (D, U, loss) points of two or more budgets;
    None when there are too few points or budgets to tell the parameters apart."""
    from scipy.optimize import least_squares

    data = np.asarray(points, dtype=float)
    if len(data) < 6 or len(np.unique(data[:, 1])) < 2:
        return None
    tokens, unique, loss = data.T

    def residuals(theta: np.ndarray) -> np.ndarray:
        floor, log_scale, exponent, log_r = theta
        return floor + np.exp(log_scale - exponent * np.log(effective_tokens(tokens, unique, math.exp(log_r)))) - loss

    lowest = float(loss.min())
    floor = 0.5 * lowest
    best = None
    for exponent in (0.2, 0.5):
        for r_star in (1.0, 10.0, 100.0, 1000.0):
            log_scale = math.log(max(loss.max() - floor, 1e-3)) + exponent * math.log(tokens.min())
            start = np.array([floor, log_scale, exponent, math.log(r_star)])
            fit = least_squares(residuals, start, bounds=([0.0, -20.0, 0.01, math.log(0.01)],
                                                          [lowest, 80.0, 3.0, math.log(1e5)]))
            if best is None or fit.cost < best.cost:
                best = fit
    floor, log_scale, exponent, log_r = best.x
    dof = max(len(loss) - 4, 1)
    sigma2 = 2 * best.cost / dof
    try:
        covariance = np.linalg.inv(best.jac.T @ best.jac) * sigma2
        log_r_se = float(math.sqrt(max(covariance[3, 3], 0.0)))
    except np.linalg.LinAlgError:
        log_r_se = math.inf
    return ReuseFit(family, size, parameters, float(floor), float(math.exp(log_scale)), float(exponent),
                    float(math.exp(log_r)), log_r_se, float(math.sqrt(2 * best.cost / len(loss))), len(loss))


def measured_crossover(masked: list[Point], ar: list[Point]) -> float | None:
    """The number of training tokens from which masked's best-so-far loss stays below AR's to
    the end of the measured curves (AR's best-so-far holds after its run stopped: it stopped
    because it no longer improved); None when masked ends above it. Masked being ahead early
    (it learns the unigram distribution first) is not a crossover."""
    if not masked or not ar:
        return None
    ar_tokens = np.array([p[0] for p in ar])
    ar_best = np.array([p[2] for p in ar])
    since = None
    for tokens, _, loss in masked:
        seen = ar_best[ar_tokens <= tokens]
        if not len(seen):
            continue
        if loss < seen[-1]:
            since = tokens if since is None else since
        else:
            since = None
    return since


def fitted_crossover(masked: ReuseFit, ar: ReuseFit, unique: float, start: float) -> float | None:
    """The number of training tokens (>= `start`) from which the fitted masked loss on U unique
    tokens stays below the fitted AR loss, up to MAX_EPOCHS epochs; None when it ends above."""
    grid = np.geomspace(max(start, 1.0), unique * MAX_EPOCHS, 2000)
    below = masked.loss(grid, unique) < ar.loss(grid, unique)
    if not below[-1]:
        return None
    above = np.nonzero(~below)[0]
    return float(grid[above.max() + 1 if len(above) else 0])


def doubling_rate_crossover(masked: list[Point], target: float) -> float | None:
    """The training tokens at which masked's best-so-far loss would reach `target` if it went on
    falling at the rate of its last doubling of training tokens (loss per doubling of D); None
    when it did not fall over that doubling. Repetition never costing it anything and the rate
    never slowing, this is an optimistic (low) estimate of the compute masked needs."""
    end_tokens, _, end_loss = masked[-1]
    if end_loss <= target:
        return end_tokens
    earlier = [p for p in masked if p[0] <= end_tokens / 2]
    if not earlier:
        return None
    rate = (earlier[-1][2] - end_loss) / math.log2(end_tokens / earlier[-1][0])
    return end_tokens * 2 ** ((end_loss - target) / rate) if rate > 0 else None


def crossover_budget(masked: ReuseFit, ar: ReuseFit, low: float, high: float) -> tuple[str, float | None]:
    """Where, among unique budgets in [low, high] tokens, masked's fitted floor (unlimited
    repetitions) is below AR's: ("below", U*) when at the budgets below U* (masked wins given
    data scarce enough and compute enough), ("above", U*) when above U*, ("all", None),
    ("none", None), or ("mixed", None) when the two floors cross more than once."""
    grid = np.geomspace(low, high, 2000)
    wins = masked.limit(grid) < ar.limit(grid)
    if wins.all() or not wins.any():
        return ("all" if wins.all() else "none"), None
    changes = np.nonzero(wins[1:] != wins[:-1])[0]
    if len(changes) > 1:
        return "mixed", None
    return ("below" if wins[0] else "above"), float(grid[changes[0] + 1])


def after_take_off(points: list[Point]) -> list[Point]:
    """The points of a best-so-far curve from where it has fallen TAKE_OFF below its first one
    (a masked model sits at the unigram loss first: a plateau the reuse law does not describe);
    [] when it never does."""
    for i, (_, _, loss) in enumerate(points):
        if loss <= points[0][2] - TAKE_OFF:
            return points[i:]
    return []


def curve_points(best: list[dict[str, str]], curves: list[dict[str, Any]], min_tokens: float
                 ) -> dict[tuple[str, str], dict[int, list[Point]]]:
    """(family, size) -> unique budget -> running-minimum points of that family's best variant,
    leaving out those before `min_tokens` training tokens (warm-up)."""
    out: dict[tuple[str, str], dict[int, list[Point]]] = {}
    for row in best:
        curve = [p for p in curves if p["cell"] == row["cell"]]
        used = as_float(row.get("unique_tokens_used") or row["unique_tokens"])
        points = [p for p in running_minimum(curve, used) if p[0] >= min_tokens]
        key = (row["family"], row.get("size") or "base")
        out.setdefault(key, {})[int(as_float(row["unique_tokens"]))] = points
    return out


def analyse(best: list[dict[str, str]], curves: list[dict[str, Any]], min_tokens: float) -> dict[str, Any]:
    """Fits per (family, size) and, per size and budget, where masked overtakes AR:
    {"fits": [ReuseFit], "unfitted": [(family, size)], "crossovers": [dict], "budgets": {size: (relation, U)},
    "points": ...}. A crossover holds the training tokens at which masked goes below AR for good:
    measured, fitted (None without fits) and at the rate of masked's last doubling."""
    points = curve_points(best, curves, min_tokens)
    parameters = {(r["family"], r.get("size") or "base"): int(as_float(r["parameters"])) for r in best
                  if "parameters" in r}
    fits = {key: fit_reuse([p for pts in by_budget.values() for p in after_take_off(pts)], *key, parameters.get(key, 0))
            for key, by_budget in points.items()}
    crossovers, budgets = [], {}
    for size in dict.fromkeys(size for _, size in points):
        if ("masked", size) not in points or ("ar", size) not in points:
            continue
        fit_m, fit_a = fits.get(("masked", size)), fits.get(("ar", size))
        if fit_m and fit_a:
            measured = sorted(points[("masked", size)])
            budgets[size] = crossover_budget(fit_m, fit_a, measured[0] / EXTRAPOLATION, measured[-1] * EXTRAPOLATION)
        for unique in sorted(points[("masked", size)]):
            masked, ar = points[("masked", size)][unique], points[("ar", size)].get(unique, [])
            if not masked or not ar:
                continue
            n = parameters.get(("masked", size), 0)
            fitted = fitted_crossover(fit_m, fit_a, unique, masked[0][0]) if fit_m and fit_a else None
            crossovers.append({"size": size, "unique_tokens": unique, "parameters": n,
                               "measured": measured_crossover(masked, ar), "fitted": fitted,
                               "fits_poor": bool(fit_m and fit_a and not (fit_m.reliable and fit_a.reliable)),
                               "doubling_rate": doubling_rate_crossover(masked, ar[-1][2]),
                               "masked_end": masked[-1][2], "ar_best": ar[-1][2],
                               "measured_to_epochs": masked[-1][0] / unique})
    return {"fits": [f for f in fits.values() if f], "unfitted": [k for k, f in fits.items() if f is None],
            "crossovers": crossovers, "budgets": budgets, "points": points}


def report_lines(analysis: dict[str, Any]) -> list[str]:
    """The fits and crossovers as Markdown."""
    lines = ["## Data reuse and the crossover compute", "",
             "Fitted per family and size on the best-so-far validation loss of every budget (the family's best "
             "variant), after warm-up: L = E + B / D'^beta with D' = min(D, U) + U R* (1 - exp(-(D/U - 1) / R*)). "
             "A repeated epoch is worth half a fresh one after R* ln 2 repetitions (the half-life). Each curve is "
             f"fitted from where it has fallen {TAKE_OFF} nats below its first validation: a masked model first sits "
             "at the unigram loss, a plateau this law does not describe; a budget whose curve never leaves it is left "
             f"out. A fit with an rmse above {POOR_FIT} nats/token is marked poor, one whose R* is uncertain by more "
             "than a factor e unidentified: their half-lives say little.", "",
             "| size | family | parameters | E | B | beta | R* (1-se range) | half-life, epochs | rmse | points |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for f in sorted(analysis["fits"], key=lambda f: (f.size, f.family)):
        low, high = (f.r_star * math.exp(-f.log_r_star_se), f.r_star * math.exp(f.log_r_star_se)) \
            if math.isfinite(f.log_r_star_se) else (0.0, math.inf)
        lines.append(f"| {f.size} | {f.family} | {f.parameters:,} | {f.floor:.3f} | {f.scale:.3g} | {f.exponent:.3f} | "
                     f"{f.r_star:.3g} ({low:.3g}-{high:.3g}){'' if f.log_r_star_se <= 1 else ' (unidentified)'} | "
                     f"{f.half_life:.3g} | {f.rmse:.3f}"
                     f"{' (poor)' if f.rmse > POOR_FIT else ''} | {f.points} |")
    for family, size in analysis["unfitted"]:
        lines.append(f"| {size} | {family} | | | | | not fitted: fewer than two budgets or six points | | | |")
    lines += ["", "Where masked's best-so-far loss goes below AR's for good (AR tuned the same way), in training tokens "
              "(epochs; training compute 6 N D FLOPs): measured; read off the fits; and at the rate masked was still "
              "improving over its last doubling of tokens, kept up forever with repeats costing nothing (an optimistic, "
              "low estimate of what masked needs).", "",
              "| size | U | measured to (epochs) | masked, ar best so far (validations in training) | measured crossover | from the fits | "
              "at the last doubling's rate |", "|---|---|---|---|---|---|---|"]

    def shown(tokens: float | None, c: dict[str, Any], poor: bool = False) -> str:
        if tokens is None:
            return "none"
        flops = FLOPS_PER_PARAMETER_TOKEN * c["parameters"] * tokens
        return (f"{tokens:.3g} tokens ({tokens / c['unique_tokens']:.3g} epochs, {flops:.1e} FLOPs)"
                + (" (poor fits)" if poor else ""))

    for c in analysis["crossovers"]:
        lines.append(f"| {c['size']} | {c['unique_tokens']:,} | {c['measured_to_epochs']:.0f} | "
                     f"{c['masked_end']:.3f}, {c['ar_best']:.3f} | {shown(c['measured'], c)} | "
                     f"{shown(c['fitted'], c, c['fits_poor'])} | {shown(c['doubling_rate'], c)} |")
    lines.append("")
    for size, (relation, budget) in analysis["budgets"].items():
        where = {"below": f"unique budgets below about **{budget or 0:,.0f} tokens**",
                 "above": f"unique budgets above about **{budget or 0:,.0f} tokens** (not the published direction: "
                          "masked's fitted floor E is the lower one, so it wins with more data, not less)",
                 "all": "**every** unique budget in that range",
                 "none": "**no** unique budget in that range: the fits do not predict a crossover at this size",
                 "mixed": "budgets in more than one stretch of that range (the fits are not reliable there)"}[relation]
        poor = any(not f.reliable for f in analysis["fits"] if f.size == size)
        lines.append(f"- size {size}: reading the fits from 1/{EXTRAPOLATION} of the smallest budget to {EXTRAPOLATION}x "
                     f"the largest, masked's floor (its loss with unlimited repetitions) is below AR's at {where}."
                     + (" A fit of this size is poor or leaves R* unidentified: not a figure to rely on." if poor else ""))
    return lines


def plot_reuse(analysis: dict[str, Any], path: Path) -> Path:
    """Per size: each budget's best-so-far validation loss against training tokens (points) and
    the fitted law (lines, over the points it was fitted on), AR solid and masked dashed."""
    sizes = list(dict.fromkeys(size for _, size in analysis["points"]))
    fits = {(f.family, f.size): f for f in analysis["fits"]}
    fig, axes = new_grid(max(len(sizes), 1))
    for ax, size in zip(axes, sizes):
        for family, style in (("ar", "-"), ("masked", "--")):
            for i, (unique, pts) in enumerate(sorted(analysis["points"].get((family, size), {}).items())):
                if not pts:
                    continue
                color = f"C{i}"
                ax.plot([p[0] for p in pts], [p[2] for p in pts], "o" if family == "ar" else "s", color=color,
                        markersize=3, alpha=0.5, label=f"{family} U={unique:,}")
                fit, fitted = fits.get((family, size)), after_take_off(pts)
                if fit and fitted:  # the law over the stretch it was fitted on, and a little beyond
                    grid = np.geomspace(fitted[0][0], fitted[-1][0] * 3, 200)
                    ax.plot(grid, fit.loss(grid, unique), style, color=color)
        ax.set_xscale("log")
        ax.set_xlabel("training tokens D")
        ax.set_ylabel("best validation loss so far (nats/token)")
        ax.set_title(f"size {size}: data-reuse fits")
        ax.legend(fontsize=7)
    return save(fig, path)
