"""The experiment runner: a spec (YAML) -> cells -> rows in results.csv -> plots.

A spec file holds `experiment: <name>`, `out_dir`, `base` (a run config shared by every cell, the
same sections as `dlms train` configs) and the experiment's own keys. Each cell is run once; its
rows are appended to `results.csv` (rewritten atomically) and a killed experiment started again
skips the cells already there. A cell that trains resumes its run from the last checkpoint.
"""
from __future__ import annotations

import copy
import csv
from pathlib import Path
from typing import Any, ClassVar

import yaml

from ..config import RunConfig, config_from_dict, flatten, read_yaml, set_dotted
from ..errors import ConfigError, DlmsError
from ..reporting.tables import markdown_table, write_csv

EXPERIMENTS: dict[str, type["Experiment"]] = {}
RESULTS = "results.csv"


def register(cls: type["Experiment"]) -> type["Experiment"]:
    EXPERIMENTS[cls.name] = cls
    return cls


class Experiment:
    """One kind of experiment. Subclasses set `name`, `options` (their spec keys and defaults),
    and implement `cells`, `run_cell` and `plot`."""

    name: ClassVar[str] = ""
    options: ClassVar[dict[str, Any]] = {}
    summary: ClassVar[str] = ""

    def __init__(self, spec: dict[str, Any], out_dir: Path):
        self.spec = spec
        self.out_dir = out_dir
        self.base: dict[str, Any] = spec.get("base") or {}
        config_from_dict(copy.deepcopy(self.base))  # fail now, not after an hour, on a bad base config
        self._check_evaluator()

    def option(self, key: str) -> Any:
        return self.spec.get(key, self.options[key])

    def run_config(self, *overrides: dict[str, Any]) -> RunConfig:
        """The base config with nested override dicts applied in order."""
        data = copy.deepcopy(self.base)
        for extra in overrides:
            for path, value in flatten(extra):
                set_dotted(data, path, value)
        return config_from_dict(data)

    def model_checkpoint(self, log=print) -> Path:
        """The run the experiment samples from: the spec's `checkpoint`, or else a model trained
        from `base` into `<out_dir>/model` (resumed if a killed experiment left it unfinished)."""
        if self.spec.get("checkpoint"):
            return Path(self.spec["checkpoint"])
        from ..training import Trainer
        from ..checkpoint import CHECKPOINT

        run = self.out_dir / "model"
        state = run / CHECKPOINT / "trainer_state.json"
        cfg = self.run_config({"train": {"out_dir": str(run)}})
        if state.is_file():
            import json

            saved = json.loads(state.read_text(encoding="utf-8"))
            if saved["step"] >= saved.get("total_steps", cfg.train.max_steps):
                return run
            trainer = Trainer.resume(run)
        else:
            log(f"{self.name}: training the model to sample from into {run}")
            trainer = Trainer(cfg, overwrite=True)  # the experiment's own folder; no checkpoint yet to lose
        try:
            trainer.train()
        finally:
            trainer.close()
        return run

    def evaluator(self):
        """The spec's `evaluator` (a dlms 'ar' run or a Hugging Face causal LM folder), or None.
        Never the model the experiment samples from (ConfigError): no model scores its own samples."""
        spec = self.spec.get("evaluator")
        if not spec:
            return None
        from ..eval.evaluator import load_evaluator

        self._check_evaluator()
        return load_evaluator(spec)

    def _check_evaluator(self) -> None:
        spec = self.spec.get("evaluator")
        if not spec:
            return
        from ..eval.evaluator import check_independent

        try:
            check_independent(self.spec.get("checkpoint") or self.out_dir / "model", spec, what="sampled from")
        except DlmsError as exc:
            raise ConfigError(f"evaluator in the experiment config: {exc}") from None

    def sample_figures(self, lm, texts: list[str], labels: list[str] | None = None) -> dict[str, Any]:
        """The standard figures of samples of `lm` (eval/generation.py): length and unigram entropy
        beside the data's own (validation texts drawn as the samples are, computed once per
        experiment), gaps and `at_data_length`, diversity, perplexity under the spec's evaluator,
        and on the built-in corpus grammaticality and label accuracy."""
        from ..eval.generation import DATA_TEXTS, data_reference_texts, generation_figures

        key = (len(texts), tuple(sorted({str(label) for label in labels})) if labels else None)
        cache = self.__dict__.setdefault("_data_texts", {})
        if key not in cache:
            cache[key] = data_reference_texts(lm, n=max(len(texts), DATA_TEXTS), labels=labels)
        return generation_figures(texts, tokenizer=lm.tokenizer, data_texts=cache[key], evaluator=self.evaluator(),
                                  builtin=lm.cfg.data.dataset.startswith("builtin"), labels=labels,
                                  label_column=lm.cfg.data.label_column)

    def cells(self) -> list[dict[str, Any]]:
        """The grid: one dict per cell, each with a unique string "cell"."""
        raise NotImplementedError

    def run_cell(self, cell: dict[str, Any], cell_dir: Path) -> list[dict[str, Any]]:
        """Run one cell (writing whatever it logs under `cell_dir`); return its result rows."""
        raise NotImplementedError

    def plot(self, rows: list[dict[str, str]]) -> list[Path]:
        """Draw the PNG plots from the rows of results.csv (values as strings); return their paths."""
        raise NotImplementedError

    def report(self, rows: list[dict[str, str]], plots: list[Path]) -> str:
        """A Markdown report made from results.csv alone: the command, the table, notes on the
        samples' length and on the evaluator, the plots."""
        return "\n".join([f"# {self.name}: {self.summary}", "", *command_lines(self.out_dir), "",
                          markdown_table(rows), "", *sample_notes(rows, self.spec.get("evaluator")),
                          *[f"![{p.stem}]({p.name})" for p in plots], ""])


def load_experiment(config: str | Path, name: str | None = None, out_dir: str | Path | None = None) -> Experiment:
    """The experiment a spec file describes; `name` (from the command line) must match its `experiment`."""
    spec = read_yaml(config)
    named = spec.get("experiment", name)
    if name is not None and named != name:
        raise ConfigError(f"'{config}' describes experiment '{named}', not '{name}'; pass the matching name")
    if named not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment '{named}'; choose one of: {', '.join(sorted(EXPERIMENTS))}")
    cls = EXPERIMENTS[named]
    known = {"experiment", "out_dir", "base", *cls.options}
    unknown = sorted(set(spec) - known)
    if unknown:
        raise ConfigError(f"unknown key '{unknown[0]}' in experiment config '{config}'; "
                          f"known keys: {', '.join(sorted(known))}")
    folder = Path(out_dir or spec.get("out_dir") or f"runs/experiments/{named}")
    return cls(spec, folder)


def sample_notes(rows: list[dict[str, Any]], evaluator: str | None) -> list[str]:
    """Markdown lines under a table of sample figures: which rows are not at the data's length
    (eval/generation.py: their quality figures support no claim) and who scored the samples."""
    if not rows or "mean_words" not in rows[0]:
        return []
    from ..eval.generation import ENTROPY_TOLERANCE, LENGTH_TOLERANCE

    lines = []
    if "at_data_length" in rows[0]:
        off = [str(r.get("cell", "?")) for r in rows if str(r.get("at_data_length")) != "True"]
        rule = (f"`at_data_length`: mean words within {LENGTH_TOLERANCE:.0%} of the data's and unigram entropy "
                f"within {ENTROPY_TOLERANCE:.0%} of the data's (`length_gap`, `entropy_gap`)")
        lines.append(f"{rule}. " + (f"Not at the data's length, so no quality claim: {', '.join(off)}."
                                    if off else "Every row is at the data's length."))
    else:
        lines.append("These rows predate the data's figures (no `at_data_length`): rerun the cells to judge them.")
    lines.append(f"`gen_ppl`: perplexity under the evaluator `{evaluator}`, not one of the models compared."
                 if evaluator else "No `gen_ppl`: no evaluator (a model never scores its own samples).")
    return [*lines, ""]


def command_lines(out_dir: Path) -> list[str]:
    """How the folder was made (command.txt, written by `dlms experiment`), as Markdown lines."""
    command = out_dir / "command.txt"
    if not command.is_file():
        return []
    return ["Made with:", "", "```", command.read_text(encoding="utf-8").strip(), f"dlms plot {out_dir}", "```"]


def read_results(out_dir: Path) -> list[dict[str, str]]:
    path = out_dir / RESULTS
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def run_experiment(exp: Experiment, *, progress: bool = True, log=print) -> Path:
    """Run every cell not yet in results.csv, then draw the plots; returns the results path."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    exp.out_dir.mkdir(parents=True, exist_ok=True)
    (exp.out_dir / "experiment.yaml").write_text(yaml.safe_dump(exp.spec, sort_keys=False), encoding="utf-8")
    rows: list[dict[str, Any]] = read_results(exp.out_dir)
    done = {row["cell"] for row in rows}
    cells = exp.cells()
    todo = [c for c in cells if c["cell"] not in done]
    if done:
        log(f"{exp.name}: {len(cells) - len(todo)} of {len(cells)} cells already in {exp.out_dir / RESULTS}, skipped")
    bar = Progress(TextColumn(f"[bold]{exp.name}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[cell]}"), TimeElapsedColumn(), disable=not progress)
    with bar:
        task = bar.add_task(exp.name, total=len(cells), completed=len(cells) - len(todo), cell="")
        for cell in todo:
            bar.update(task, cell=cell["cell"])
            log(f"{exp.name}: cell {cell['cell']}")
            new_rows = exp.run_cell(cell, exp.out_dir / "runs" / cell["cell"])
            rows += [{"cell": cell["cell"], **row} for row in new_rows]
            write_csv(exp.out_dir / RESULTS, rows)
            bar.advance(task)
    for path in redraw_plots(exp.out_dir, exp):
        log(f"{exp.name}: wrote {path}")
    return exp.out_dir / RESULTS


def redraw_plots(out_dir: str | Path, exp: Experiment | None = None) -> list[Path]:
    """Draw (again) the plots of an experiment folder from its results.csv."""
    out_dir = Path(out_dir)
    if exp is None:
        spec_file = out_dir / "experiment.yaml"
        if not spec_file.is_file():
            raise ConfigError(f"'{out_dir}' is not an experiment folder (no experiment.yaml); "
                              "pass the folder `dlms experiment` wrote")
        exp = load_experiment(spec_file, out_dir=out_dir)
    rows = read_results(out_dir)
    if not rows:
        raise ConfigError(f"'{out_dir / RESULTS}' has no results yet; run the experiment first")
    plots = exp.plot(rows)
    report = out_dir / "report.md"
    report.write_text(exp.report(rows, plots), encoding="utf-8")
    return [*plots, report]


def copy_report(out_dir: str | Path, dest: str | Path) -> list[Path]:
    """Copy an experiment's report.md, plots and CSV files into `dest` (e.g. a docs/ folder)."""
    import shutil

    out_dir, dest = Path(out_dir), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    copied = []
    for path in sorted(out_dir.iterdir()):
        if path.suffix in (".md", ".png", ".csv", ".yaml", ".txt") and path.is_file():
            copied.append(Path(shutil.copy2(path, dest / path.name)))
    return copied
