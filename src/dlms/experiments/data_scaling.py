"""`data-scaling`: AR against diffusion at a fixed model size and a fixed total of training
tokens, over unique-data budgets U, each repeated for E = total / U epochs.

Per cell (family, U): a run trained on the first U tokens of the training split (validation
split unchanged), validated every k-th epoch (k chosen so a run has about `evals_per_run`
validations; a mapping family -> count sets it per family, and a count at least the number of
epochs validates after every epoch), the weights of the best validation kept; that best is then re-evaluated with
`final_passes` Monte Carlo passes over the whole validation split (an unbiased figure: the
per-epoch minimum of noisy estimates is biased low). Plots: the crossover (best validation loss
against epochs, one line per family) and the validation curves of every cell.

Two more axes, both optional: `sizes` (name -> `model` section, e.g. `{xs: {d_model: 64,
n_layers: 2, n_heads: 2, mlp_hidden: 256}}`; none: the base's model) and `regularisation`
(family -> variant name -> config sections, e.g. `{ar: {wd0.1: {train: {weight_decay: 0.1}},
mask0.15: {method: {input_mask_prob: 0.15}}}}`; a family not listed runs the base's settings).
Each (family, size, budget) is then reported at its best variant (data_scaling_report.py), so
that every family is tuned by the same sweep, and each family's data-reuse half-life and the
compute at which masked overtakes AR are read off the validation curves (data_reuse_fit.py).
Cell names hold the axes that are there: `ar-U25000`, or `ar-xs-wd0.1-U25000`.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..assembly import dataset_from_config
from ..errors import ConfigError
from ..reporting.tables import markdown_table
from .base import Experiment, command_lines, register
from .data_reuse_fit import analyse, plot_reuse, report_lines
from .data_scaling_report import (best_of_sweeps, comparison_table, comparisons, plot_crossover, plot_curves,
                                  run_notes, verdict)
from ..reporting.plots import as_float


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
        "sizes": {},  # size name -> model section; empty: the base's model
        "regularisation": {},  # family -> variant name -> config sections (after family_overrides)
    }

    def cells(self) -> list[dict[str, Any]]:
        budgets = self.option("unique_tokens")
        if not budgets or any(not isinstance(u, int) or u < 1 for u in budgets):
            raise ConfigError("unique_tokens must be a list of positive integers (training tokens per budget)")
        sizes, sweeps = self._axis("sizes"), self._axis("regularisation")
        for family, variants in sweeps.items():
            if family not in self.option("families") or not isinstance(variants, dict) or not variants:
                raise ConfigError(f"regularisation: '{family}' must be one of the families "
                                  f"({', '.join(self.option('families'))}) mapped to named variants, e.g. "
                                  "{ar: {wd0.1: {train: {weight_decay: 0.1}}}}")
        cells = []
        for u in budgets:
            for size in sizes or [None]:
                for family in self.option("families"):
                    for variant in sweeps.get(family) or [None]:
                        name = "-".join(part for part in (family, size, variant, f"U{u}") if part is not None)
                        cells.append({"cell": name, "family": family, "unique_tokens": u, "size": size,
                                      "variant": variant})
        return cells

    def _axis(self, key: str) -> dict[str, Any]:
        """The spec's mapping for `key` ({} when absent); ConfigError for anything but a mapping
        of names without '-' (they go into cell names)."""
        value = self.option(key) or {}
        if not isinstance(value, dict) or any(not isinstance(k, str) or "-" in k or not k for k in value):
            raise ConfigError(f"{key} must map names (without '-') to config sections; got {value!r}")
        return value

    def run_cell(self, cell: dict[str, Any], cell_dir: Path) -> list[dict[str, Any]]:
        from ..model import DiffusionLM
        from ..training import Trainer
        from ..checkpoint import CHECKPOINT

        family, budget = cell["family"], cell["unique_tokens"]
        size, variant = cell.get("size"), cell.get("variant")
        overrides = self.option("family_overrides").get(family, {})
        cfg = self.run_config({"method": {"name": family}},
                              {"model": self._axis("sizes")[size]} if size else {}, overrides,
                              self._axis("regularisation")[family][variant] if variant else {},
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
        parameters = sum(p.numel() for p in best.model.parameters())
        return [{
            "family": family, "size": size or "base", "variant": variant or "none", "parameters": parameters,
            "params_per_unique_token": round(parameters / budget, 2), "unique_tokens": budget,
            "unique_tokens_used": steps_per_epoch * t.batch_size * cfg.data.seq_len,
            "total_tokens": max_steps * tokens_per_step, "epochs": round(epochs, 2),
            "steps_per_epoch": steps_per_epoch, "steps": summary["step"], "stopped_early": summary["stopped_early"],
            "best_step": best_point["step"], "best_epoch": best_point["epoch"],
            "best_val_loss": final["nll"], "best_val_se": final["se"], "best_val_bound": final["bound"],
            "final_val_loss": curve[-1]["val_nll"], "train_minutes": round(_training_seconds(cell_dir / "metrics.jsonl") / 60, 2),
        }]

    def curves(self, rows: list[dict[str, str]]) -> list[dict[str, Any]]:
        """Every cell's validation points: [{cell, family, unique_tokens, step, epoch, val_nll, val_se}]."""
        curves = []
        for row in rows:
            cell_dir = self.out_dir / "runs" / row["cell"]
            steps_per_epoch = int(as_float(row["steps_per_epoch"]))
            for point in validation_curve(cell_dir / "metrics.jsonl", steps_per_epoch):
                curves.append({"cell": row["cell"], "family": row["family"], "unique_tokens": row["unique_tokens"], **point})
        return curves

    def reuse_analysis(self, rows: list[dict[str, str]], curves: list[dict[str, Any]]) -> dict[str, Any]:
        """The data-reuse fits and crossovers (data_reuse_fit.py) of the best variants, leaving out
        the tokens of each curve's warm-up (`curves`: those of `self.curves(rows)`)."""
        t = self.run_config().train
        tokens_per_step = max((as_float(r.get("unique_tokens_used")) / as_float(r["steps_per_epoch"]) for r in rows
                               if r.get("unique_tokens_used")), default=0.0) * t.grad_accum
        return analyse(best_of_sweeps(rows), curves, t.warmup_steps * tokens_per_step)

    def plot(self, rows: list[dict[str, str]]) -> list[Path]:
        from ..reporting.tables import write_csv

        curves = self.curves(rows)
        if curves:
            write_csv(self.out_dir / "curves.csv", curves)
        best = best_of_sweeps(rows)
        return [plot_crossover(best, self.out_dir / "crossover.png"),
                plot_curves(best, curves, self.out_dir / "curves.png"),
                plot_reuse(self.reuse_analysis(rows, curves), self.out_dir / "data_reuse.png")]

    def report(self, rows: list[dict[str, str]], plots: list[Path]) -> str:
        columns = ["family", "size", "variant", "parameters", "unique_tokens", "params_per_unique_token", "epochs",
                   "best_val_loss", "best_val_se", "best_epoch", "final_val_loss", "stopped_early", "train_minutes"]
        columns = [c for c in columns if c in rows[0]]
        budgets = ", ".join(f"{int(u):,}" for u in self.option("unique_tokens"))
        base = self.run_config()
        sizes = self.option("sizes") or {}
        sweeps = self.option("regularisation") or {}
        best = best_of_sweeps(rows)
        compared = comparisons(best)
        curves = self.curves(rows)  # every cell's metrics file, read once
        return "\n".join([
            "# Data-scaling study: AR against diffusion under repeated data", "",
            f"Data: `{base.data.dataset}` ({base.data.layout} {base.data.seq_len or 'fitted'}-token rows, "
            f"{base.data.vocab_size}-token BPE, validation: the last {base.data.val_fraction:.0%} of the examples). "
            + (f"Model sizes: {', '.join(f'{k} ({v})' for k, v in sizes.items())}. " if sizes
               else f"Model: the `{base.model.preset}` preset for every family. ")
            + "Each run trains on the first U tokens of "
            f"the training split (U = {budgets}) for {self.option('total_tokens'):,} tokens in all, i.e. "
            "total / U epochs. Best validation loss: the weights of the best validation during training, "
            f"re-evaluated on the whole validation split ({self.option('final_passes')} Monte Carlo passes of "
            "the ELBO for diffusion, with its standard error; exact NLL for AR)."
            + (" Regularisation swept per family: " + "; ".join(f"{f}: {', '.join(v)}" for f, v in sweeps.items())
               + ". Each family is compared at its best variant (chosen by the same validation loss)." if sweeps else ""),
            "", *command_lines(self.out_dir), "",
            markdown_table(rows, columns), "",
            "## What it shows", "", *comparison_table(compared), "", *verdict(compared, best, curves), "",
            *report_lines(self.reuse_analysis(rows, curves)), "", "## Each run", "", *run_notes(rows), "",
            *[f"![{p.stem}]({p.name})" for p in plots], "",
        ])


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


def _training_seconds(metrics_file: Path, gap: float = 300.0) -> float:
    """Wall time of a run from its metrics log, leaving out pauses longer than `gap` seconds (a
    killed experiment waiting to be started again)."""
    times = [json.loads(line)["time"] for line in metrics_file.read_text(encoding="utf-8").splitlines() if line]
    return sum(b - a for a, b in zip(times, times[1:]) if b - a < gap)
