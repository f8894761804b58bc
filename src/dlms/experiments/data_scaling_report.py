"""What the data-scaling rows say: each (family, size, budget) at its best regularisation
variant, the comparison at the smallest and the largest budget per size, and the plots.

Rows are those of results.csv (values as strings). Rows written before the size and
regularisation axes existed have no `size` / `variant`: they read as "base" / "none".

The best variant of a sweep is chosen by the same re-evaluated validation loss it is reported
with, for every family alike: a small optimistic bias, the same for each family.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .data_reuse_fit import TAKE_OFF
from ..reporting.plots import as_float, new_grid, save

Row = dict[str, str]
SIGNIFICANT = 2.0  # standard errors of the difference for a claim that one family is lower


def axis_value(row: Row, key: str, default: str) -> str:
    return row.get(key) or default


def best_of_sweeps(rows: list[Row]) -> list[Row]:
    """One row per (family, size, unique_tokens): the variant with the lowest best_val_loss, in
    the order of first appearance."""
    best: dict[tuple[str, str, int], Row] = {}
    for row in rows:
        key = (row["family"], axis_value(row, "size", "base"), int(as_float(row["unique_tokens"])))
        if key not in best or as_float(row["best_val_loss"]) < as_float(best[key]["best_val_loss"]):
            best[key] = row
    return list(best.values())


def comparisons(best: list[Row]) -> list[dict[str, Any]]:
    """Per size and budget, each non-ar family against ar (both at their best variant): the
    difference (family - ar, nats/token), its standard error sqrt(se_f^2 + se_ar^2), z, and which
    is lower by more than SIGNIFICANT standard errors ("tie" otherwise)."""
    index = {(r["family"], axis_value(r, "size", "base"), int(as_float(r["unique_tokens"]))): r for r in best}
    out = []
    for (family, size, budget), row in index.items():
        ar = index.get(("ar", size, budget))
        if family == "ar" or ar is None:
            continue
        diff = as_float(row["best_val_loss"]) - as_float(ar["best_val_loss"])
        se = math.sqrt(as_float(row["best_val_se"]) ** 2 + as_float(ar["best_val_se"]) ** 2)
        z = diff / se if se > 0 else math.copysign(math.inf, diff) if diff else 0.0
        lower = family if z < -SIGNIFICANT else "ar" if z > SIGNIFICANT else "tie"
        out.append({"size": size, "unique_tokens": budget, "family": family, "variant": axis_value(row, "variant", "none"),
                    "ar_variant": axis_value(ar, "variant", "none"), "family_loss": as_float(row["best_val_loss"]),
                    "ar_loss": as_float(ar["best_val_loss"]), "difference": diff, "se": se, "z": z, "lower": lower,
                    "params_per_unique_token": as_float(row.get("params_per_unique_token"))})
    return sorted(out, key=lambda c: (c["size"], c["family"], c["unique_tokens"]))


def comparison_table(compared: list[dict[str, Any]]) -> list[str]:
    lines = ["| size | U | params / U | family (variant) | its best | ar (variant) | ar best | difference ± se | lower |",
             "|---|---|---|---|---|---|---|---|---|"]
    for c in compared:
        ratio = c["params_per_unique_token"]
        lines.append(f"| {c['size']} | {c['unique_tokens']:,} | {'-' if math.isnan(ratio) else format(ratio, '.3g')} | "
                     f"{c['family']} ({c['variant']}) | {c['family_loss']:.3f} | ar ({c['ar_variant']}) | "
                     f"{c['ar_loss']:.3f} | {c['difference']:+.3f} ± {c['se']:.3f} | **{c['lower']}** |")
    return lines


def verdict(compared: list[dict[str, Any]], best: list[Row], curves: list[dict[str, Any]]) -> list[str]:
    """Per size and non-ar family: is it lower than ar by more than SIGNIFICANT standard errors at
    the smallest budget while ar is lower at the largest (the published result)? `best`: the rows
    of `best_of_sweeps`; `curves`: every cell's validation points."""
    lines = []
    for size, family in sorted({(c["size"], c["family"]) for c in compared}):
        mine = sorted((c for c in compared if c["size"] == size and c["family"] == family),
                      key=lambda c: c["unique_tokens"])
        small, large = mine[0], mine[-1]
        for name, c in (("smallest", small), ("largest", large))[:len(mine)]:
            lines.append(f"- size {size}, {name} budget (U = {c['unique_tokens']:,}): {family} {c['family_loss']:.3f}, "
                         f"ar {c['ar_loss']:.3f}, difference {c['difference']:+.3f} ± {c['se']:.3f} "
                         f"({c['z']:+.1f} se): **{c['lower']}**.")
        if len(mine) > 1:
            reproduced = small["lower"] == family and large["lower"] == "ar"
            lines.append(f"- size {size}: the published result ({family} lower by more than {SIGNIFICANT:g} standard "
                         f"errors at the smallest budget, ar lower at the largest) is "
                         f"**{'reproduced' if reproduced else 'not reproduced'}**.")
            if small["lower"] != family:
                lines += why_not(best, family, size, small["unique_tokens"], curves)
    return lines


def why_not(best: list[Row], family: str, size: str, budget: int, curves: list[dict[str, Any]]) -> list[str]:
    """What limited the diffusion model at the smallest budget, read off its best run (`best`:
    the rows of `best_of_sweeps`; `curves`: every cell's validation points)."""
    cells = [r for r in best if r["family"] == family and axis_value(r, "size", "base") == size
             and int(as_float(r["unique_tokens"])) == budget]
    if not cells:
        return []
    cell = cells[0]
    best, total = as_float(cell["best_epoch"]), as_float(cell["epochs"])
    losses = [as_float(p["val_nll"]) for p in sorted((p for p in curves if p["cell"] == cell["cell"]),
                                                     key=lambda p: as_float(p["epoch"]))]
    if losses and losses[0] - min(losses) < TAKE_OFF:
        return [f"- Why: at U = {budget:,} the {family} model never took off: its best validation loss "
                f"({min(losses):.3f}) is within {TAKE_OFF} of its first ({losses[0]:.3f}), the level of a model that "
                "predicts each masked token from the token frequencies alone. It did not learn to use the context "
                "before it began to memorise the few training rows."]
    if cell["stopped_early"] == "True":
        return [f"- Why: at U = {budget:,} the {family} model overfit too (its best came at epoch {best:.0f} of "
                f"{total:.0f}, then validation loss rose until the run stopped), so more compute would not lower "
                "its best: at this model size the unique data, not the epochs, is what limits it."]
    if best >= 0.8 * total:
        return [f"- Why: at U = {budget:,} the {family} model was still improving when the token budget ran out "
                f"(best at epoch {best:.0f} of {total:.0f}): it is limited by compute; a larger total_tokens "
                "may change the outcome."]
    return [f"- Why: at U = {budget:,} the {family} model's best came at epoch {best:.0f} of {total:.0f} and "
            "it did not improve afterwards; see the curves."]


def run_notes(rows: list[Row]) -> list[str]:
    """Per cell: where the best came and why the run ended (overfitting or the token budget)."""
    notes = []
    for r in rows:
        ended = ("stopped early: no new best for several validations (overfitting)" if r["stopped_early"] == "True"
                 else "ran the whole token budget")
        notes.append(f"- {r['cell']}: best at epoch {as_float(r['best_epoch']):.1f} of {as_float(r['epochs']):.1f}; "
                     f"{ended}; {as_float(r['train_minutes']):.1f} min.")
    return notes


def plot_crossover(best: list[Row], path: Path) -> Path:
    """Best validation loss (at each family's best variant) against epochs, one panel per size."""
    sizes = list(dict.fromkeys(axis_value(r, "size", "base") for r in best))
    fig, axes = new_grid(len(sizes))
    for ax, size in zip(axes, sizes):
        for family in sorted({r["family"] for r in best}):
            pts = sorted((as_float(r["epochs"]), as_float(r["best_val_loss"]), as_float(r["best_val_se"]),
                          int(as_float(r["unique_tokens"]))) for r in best
                         if r["family"] == family and axis_value(r, "size", "base") == size)
            ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], marker="o", capsize=3,
                        label=family)
            for x, y, _, u in pts:
                ax.annotate(f"U={u:,}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set_xscale("log")
        epochs = sorted({as_float(r["epochs"]) for r in best if axis_value(r, "size", "base") == size})
        ax.set_xticks(epochs, [f"{e:g}" for e in epochs])
        ax.minorticks_off()
        ax.set_xlabel("epochs over the unique data (total tokens / U)")
        ax.set_ylabel("best validation loss, nats/token\n(diffusion: ELBO bound)")
        ax.set_title(f"size {size}: best of each sweep")
        ax.legend()
    return save(fig, path)


def plot_curves(best: list[Row], curves: list[dict[str, Any]], path: Path) -> Path:
    """Validation loss against epochs of each family's best variant: a row of panels per size,
    a column per budget."""
    sizes = list(dict.fromkeys(axis_value(r, "size", "base") for r in best))
    budgets = sorted({int(as_float(r["unique_tokens"])) for r in best})
    fig, axes = new_grid(len(budgets), rows=len(sizes))
    for i, size in enumerate(sizes):
        for j, budget in enumerate(budgets):
            ax = axes[i * len(budgets) + j]
            for row in best:
                if (axis_value(row, "size", "base"), int(as_float(row["unique_tokens"]))) != (size, budget):
                    continue
                pts = [p for p in curves if p["cell"] == row["cell"]]
                label = row["family"] + ("" if axis_value(row, "variant", "none") == "none" else f" ({row['variant']})")
                ax.plot([p["epoch"] for p in pts], [p["val_nll"] for p in pts], marker=".", label=label)
            ax.set_title(f"U = {budget:,} tokens" + ("" if size == "base" else f", size {size}"))
            ax.set_xlabel("epoch")
            ax.set_ylabel("validation loss (nats/token)")
            if ax.get_legend_handles_labels()[0]:
                ax.legend()
    return save(fig, path)
