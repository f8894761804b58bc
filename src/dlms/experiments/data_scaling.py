"""`data-scaling`: AR against diffusion at a fixed model size and a fixed total of training
tokens, over unique-data budgets U, each repeated for E = total / U epochs.

Per cell (family, U): a run trained on the first U tokens of the training split (validation
split unchanged), validated every k-th epoch (k chosen so a run has about `evals_per_run`
validations; a mapping family -> count sets it per family, and a count at least the number of
epochs validates after every epoch), the weights of the best validation kept; that best is then re-evaluated with
`final_passes` Monte Carlo passes over the whole validation split (an unbiased figure: the
per-epoch minimum of noisy estimates is biased low). Plots: the crossover (best validation loss
against epochs, one line per family) and the validation curves of every cell.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..assembly import dataset_from_config
from ..errors import ConfigError
from .base import Experiment, command_lines, markdown_table, register
from .plots import as_float, new_figure, new_grid, save


@register
class DataScaling(Experiment):
    name = "data-scaling"
    summary = "AR vs diffusion: best validation loss over unique-data budgets at a fixed token total"
    options = {
        "families": ["ar", "masked"],
        "unique_tokens": [25_000, 100_000],
        "total_tokens": 4_000_000,
        "evals_per_run": 40,
        "final_passes": 16,
        "family_overrides": {},  # family -> config sections applied on top of `base`
    }

    def cells(self) -> list[dict[str, Any]]:
        budgets = self.option("unique_tokens")
        if not budgets or any(not isinstance(u, int) or u < 1 for u in budgets):
            raise ConfigError("unique_tokens must be a list of positive integers (training tokens per budget)")
        return [{"cell": f"{family}-U{u}", "family": family, "unique_tokens": u}
                for u in budgets for family in self.option("families")]

    def run_cell(self, cell: dict[str, Any], cell_dir: Path) -> list[dict[str, Any]]:
        from ..model import DiffusionLM
        from ..training import Trainer
        from ..training.checkpoint import CHECKPOINT

        family, budget = cell["family"], cell["unique_tokens"]
        overrides = self.option("family_overrides").get(family, {})
        cfg = self.run_config({"method": {"name": family}}, overrides,
                              {"data": {"train_tokens": budget}, "train": {"out_dir": str(cell_dir)}})
        dataset = dataset_from_config(cfg.data)
        cfg.data.seq_len = dataset.seq_len  # null (fit the data) becomes the number chosen
        t = cfg.train
        steps_per_epoch = max(1, len(dataset.train) // t.batch_size)
        tokens_per_step = t.batch_size * t.grad_accum * cfg.data.seq_len
        max_steps = max(1, math.ceil(self.option("total_tokens") / tokens_per_step))
        epochs = max_steps / steps_per_epoch
        evals = self.option("evals_per_run")
        evals = evals.get(family, 40) if isinstance(evals, dict) else evals
        every = max(1, round(epochs / evals)) * steps_per_epoch
        t.max_steps, t.num_epochs, t.eval_every, t.save_every = max_steps, None, every, every
        state = _saved_state(cell_dir / CHECKPOINT / "trainer_state.json")
        patience = t.early_stop_patience
        if state and (state["step"] >= max_steps or 0 < patience <= state.get("evals_since_best", 0)):
            # trained to the end by a run killed before it wrote its row: nothing left to train
            summary = {"step": state["step"], "stopped_early": state["step"] < max_steps}
        else:
            if state:
                trainer = Trainer.resume(cell_dir)  # a killed experiment continues this run where it stopped
                # settings that do not change the training trajectory follow the spec as it is now
                for key in ("eval_passes", "early_stop_patience"):
                    setattr(trainer.cfg.train, key, getattr(t, key))
            else:  # a cell killed before its first checkpoint starts over
                trainer = Trainer(cfg, dataset=dataset, overwrite=True)
            try:
                summary = trainer.train()
            finally:
                trainer.close()
        curve = validation_curve(cell_dir / "metrics.jsonl", steps_per_epoch)
        best = DiffusionLM.load_checkpoint(cell_dir / "best")
        final = best.evaluate(passes=self.option("final_passes"))
        best_point = min(curve, key=lambda p: p["val_nll"])
        return [{
            "family": family, "unique_tokens": budget,
            "unique_tokens_used": steps_per_epoch * t.batch_size * cfg.data.seq_len,
            "total_tokens": max_steps * tokens_per_step, "epochs": round(epochs, 2),
            "steps_per_epoch": steps_per_epoch, "steps": summary["step"], "stopped_early": summary["stopped_early"],
            "best_step": best_point["step"], "best_epoch": best_point["epoch"],
            "best_val_loss": final["nll"], "best_val_se": final["se"], "best_val_bound": final["bound"],
            "final_val_loss": curve[-1]["val_nll"], "train_minutes": round(_training_seconds(cell_dir / "metrics.jsonl") / 60, 2),
        }]

    def plot(self, rows: list[dict[str, str]]) -> list[Path]:
        curves = []
        for row in rows:
            cell_dir = self.out_dir / "runs" / row["cell"]
            steps_per_epoch = int(as_float(row["steps_per_epoch"]))
            for point in validation_curve(cell_dir / "metrics.jsonl", steps_per_epoch):
                curves.append({"cell": row["cell"], "family": row["family"], "unique_tokens": row["unique_tokens"], **point})
        from .base import write_csv

        if curves:
            write_csv(self.out_dir / "curves.csv", curves)
        return [self._plot_crossover(rows), self._plot_curves(rows, curves)]

    def report(self, rows: list[dict[str, str]], plots: list[Path]) -> str:
        columns = ["family", "unique_tokens", "epochs", "best_val_loss", "best_val_se", "best_epoch",
                   "final_val_loss", "stopped_early", "train_minutes"]
        budgets = ", ".join(f"{int(u):,}" for u in self.option("unique_tokens"))
        base = self.run_config()
        return "\n".join([
            "# Data-scaling study: AR against diffusion under repeated data", "",
            f"Data: `{base.data.dataset}` ({base.data.layout} {base.data.seq_len or 'fitted'}-token rows, "
            f"{base.data.vocab_size}-token BPE, validation: the last {base.data.val_fraction:.0%} of the examples). "
            f"Model: the `{base.model.preset}` preset for every family. Each run trains on the first U tokens of "
            f"the training split (U = {budgets}) for {self.option('total_tokens'):,} tokens in all, i.e. "
            "total / U epochs. Best validation loss: the weights of the best validation during training, "
            f"re-evaluated on the whole validation split ({self.option('final_passes')} Monte Carlo passes of "
            "the ELBO for diffusion, with its standard error; exact NLL for AR).", "",
            *command_lines(self.out_dir), "",
            markdown_table(rows, columns), "",
            "## What it shows", "", *_verdict(rows), "", *_run_notes(rows), "",
            *[f"![{p.stem}]({p.name})" for p in plots], "",
        ])

    def _plot_crossover(self, rows: list[dict[str, str]]) -> Path:
        fig, ax = new_figure()
        for family in sorted({r["family"] for r in rows}):
            pts = sorted((as_float(r["epochs"]), as_float(r["best_val_loss"]), as_float(r["best_val_se"]),
                          int(as_float(r["unique_tokens"]))) for r in rows if r["family"] == family)
            xs, ys, es = [p[0] for p in pts], [p[1] for p in pts], [p[2] for p in pts]
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=family)
            for x, y, _, u in pts:
                ax.annotate(f"U={u:,}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("epochs over the unique data (total tokens / U)")
        ax.set_ylabel("best validation loss, nats/token (diffusion: ELBO bound)")
        ax.set_title("data-scaling: best validation loss against repetition")
        ax.legend()
        return save(fig, self.out_dir / "crossover.png")

    def _plot_curves(self, rows: list[dict[str, str]], curves: list[dict[str, Any]]) -> Path:
        budgets = sorted({int(as_float(r["unique_tokens"])) for r in rows})
        fig, axes = new_grid(len(budgets))
        for ax, budget in zip(axes, budgets):
            for family in sorted({r["family"] for r in rows}):
                pts = [p for p in curves if p["family"] == family and int(as_float(p["unique_tokens"])) == budget]
                ax.plot([p["epoch"] for p in pts], [p["val_nll"] for p in pts], marker=".", label=family)
            ax.set_title(f"U = {budget:,} tokens")
            ax.set_xlabel("epoch")
            ax.set_ylabel("validation loss (nats/token)")
            ax.legend()
        return save(fig, self.out_dir / "curves.png")


def _saved_state(path: Path) -> dict | None:
    """A cell's trainer_state.json, or None when it has no checkpoint yet."""
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def validation_curve(metrics_file: Path, steps_per_epoch: int) -> list[dict[str, Any]]:
    """The validation records of a run: [{step, epoch, val_nll, val_se}], epochs as step / steps_per_epoch."""
    points = []
    if metrics_file.is_file():
        for line in metrics_file.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            if "val_nll" in record:
                points.append({"step": record["step"], "epoch": round(record["step"] / steps_per_epoch, 3),
                               "val_nll": record["val_nll"], "val_se": record.get("val_se", 0.0)})
    return points


def _verdict(rows: list[dict[str, str]]) -> list[str]:
    """The comparison the study is about, in words made from the numbers: at the smallest budget
    is diffusion's best below AR's, and at the largest is AR's below diffusion's?"""
    families = {r["family"] for r in rows}
    if "ar" not in families or len(families) < 2:
        return []
    budgets = sorted({int(as_float(r["unique_tokens"])) for r in rows})
    best = {(r["family"], int(as_float(r["unique_tokens"]))): (as_float(r["best_val_loss"]), as_float(r["best_val_se"]))
            for r in rows}
    lines = []
    outcome = {}
    for name, budget in (("smallest", budgets[0]), ("largest", budgets[-1])):
        for family in sorted(families - {"ar"}):
            if (family, budget) not in best or ("ar", budget) not in best:
                continue
            (d, d_se), (a, _) = best[(family, budget)], best[("ar", budget)]
            lower = family if d < a else "ar"
            outcome[(name, family)] = lower
            lines.append(f"- {name} budget (U = {budget:,} tokens): {family} best {d:.3f} +- {d_se:.3f}, "
                         f"ar best {a:.3f}: **{lower}** is lower by {abs(d - a):.3f} nats/token.")
    for family in sorted(families - {"ar"}):
        if ("smallest", family) in outcome and ("largest", family) in outcome:
            reproduced = outcome[("smallest", family)] == family and outcome[("largest", family)] == "ar"
            lines.append(f"- The paper's qualitative result ({family} better at the smallest budget, ar at the "
                         f"largest) is **{'reproduced' if reproduced else 'not reproduced'}** here.")
            if not reproduced:
                lines += _why_not(rows, family, budgets[0])
    return lines


def _why_not(rows: list[dict[str, str]], family: str, budget: int) -> list[str]:
    """What limited the diffusion model at the smallest budget, read off its run."""
    cell = next((r for r in rows if r["family"] == family and int(as_float(r["unique_tokens"])) == budget), None)
    if cell is None:
        return []
    best, total = as_float(cell["best_epoch"]), as_float(cell["epochs"])
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


def _run_notes(rows: list[dict[str, str]]) -> list[str]:
    """Per cell: where the best came and why the run ended (overfitting or the token budget)."""
    notes = []
    for r in rows:
        ended = ("stopped early: no new best for several validations (overfitting)" if r["stopped_early"] == "True"
                 else "ran the whole token budget")
        notes.append(f"- {r['cell']}: best at epoch {as_float(r['best_epoch']):.1f} of {as_float(r['epochs']):.1f}; "
                     f"{ended}; {as_float(r['train_minutes']):.1f} min.")
    return notes


def _training_seconds(metrics_file: Path, gap: float = 300.0) -> float:
    """Wall time of a run from its metrics log, leaving out pauses longer than `gap` seconds (a
    killed experiment waiting to be started again)."""
    times = [json.loads(line)["time"] for line in metrics_file.read_text(encoding="utf-8").splitlines() if line]
    return sum(b - a for a, b in zip(times, times[1:]) if b - a < gap)
