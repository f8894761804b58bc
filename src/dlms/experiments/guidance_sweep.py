"""`guidance-sweep`: classifier-free guidance scale against quality, diversity and attribute
success, for a model trained with a label column.

Per cell (one guidance scale): `samples_per_label` samples for every label (or the listed
`labels`), the same seeds in every cell, scored with the standard generation figures
(eval/generation.py): attribute success is the share of samples that are grammatical and express
their label by the built-in corpus's checker (built-in data) and, given an `evaluator` (never
the model sampled from), perplexity under it; mean words and unigram entropy beside the data's
own (`length_gap`, `entropy_gap`, `at_data_length`: a row not at the data's length makes no
quality claim; report.md lists them). Plots: each figure against the scale, and attribute success against
diversity (distinct-2), the trade-off guidance moves along.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .base import Experiment, register
from ..reporting.plots import as_float, new_figure, new_grid, save


@register
class GuidanceSweep(Experiment):
    name = "guidance-sweep"
    summary = "guidance scale against quality, diversity and attribute success"
    options = {
        "checkpoint": None,  # a run trained with data.label_column; else one is trained from `base`
        "scales": [1.0, 1.5, 2.0, 3.0, 5.0],
        "labels": None,  # default: every label of the model
        "samples_per_label": 20,
        "sampler": None, "num_steps": None, "temperature": None, "top_p": None,
        "evaluator": None,  # a dlms 'ar' run or a Hugging Face causal LM folder (perplexity of samples)
        "seed": 0,
    }

    def cells(self) -> list[dict[str, Any]]:
        scales = self.option("scales")
        if not scales or any(not isinstance(w, (int, float)) for w in scales):
            raise ConfigError("scales must be a list of numbers (guidance scales; 1 = plain conditional)")
        return [{"cell": f"w{float(w):g}", "scale": float(w)} for w in scales]

    def run_cell(self, cell: dict[str, Any], cell_dir: Path) -> list[dict[str, Any]]:
        from ..model import DiffusionLM

        lm = DiffusionLM.load_checkpoint(self.model_checkpoint())
        column = lm.cfg.data.label_column
        if not column:
            raise ConfigError("guidance-sweep needs a model trained with labels; set data.label_column in `base` "
                              "or give a `checkpoint` trained with one")
        labels = self.option("labels") or lm.label_names[column]
        per = self.option("samples_per_label")
        wanted = [label for label in labels for _ in range(per)]
        start = time.perf_counter()
        ids = lm.sample_ids(num_samples=len(wanted), label=wanted, guidance=cell["scale"], seed=self.option("seed"),
                            sampler=self.option("sampler"), steps=self.option("num_steps"),
                            temperature=self.option("temperature"), top_p=self.option("top_p"))
        seconds = time.perf_counter() - start
        texts = lm.decode(ids)
        cell_dir.mkdir(parents=True, exist_ok=True)
        (cell_dir / "samples.txt").write_text("".join(f"{l}\t{t}\n" for l, t in zip(wanted, texts)), encoding="utf-8")
        figures = self.sample_figures(lm, texts, wanted)
        return [{"scale": cell["scale"], "samples": len(texts), "tokens_per_s": ids.numel() / seconds, **figures}]

    def plot(self, rows: list[dict[str, str]]) -> list[Path]:
        rows = sorted(rows, key=lambda r: as_float(r["scale"]))
        names = [k for k in ("label_accuracy", "grammatical", "gen_ppl", "distinct_2", "self_bleu") if k in rows[0]]
        fig, axes = new_grid(len(names), width=3.6)
        xs = [as_float(r["scale"]) for r in rows]
        for ax, name in zip(axes, names):
            ax.plot(xs, [as_float(r[name]) for r in rows], marker="o")
            ax.set_xlabel("guidance scale")
            ax.set_title(name)
        paths = [save(fig, self.out_dir / "guidance.png")]
        if "label_accuracy" in rows[0]:
            fig, ax = new_figure()
            ax.plot([as_float(r["distinct_2"]) for r in rows], [as_float(r["label_accuracy"]) for r in rows], marker="o")
            for r in rows:
                ax.annotate(f"w={as_float(r['scale']):g}", (as_float(r["distinct_2"]), as_float(r["label_accuracy"])),
                            textcoords="offset points", xytext=(4, 4), fontsize=8)
            ax.set_xlabel("distinct-2 (diversity)")
            ax.set_ylabel("attribute success")
            ax.set_title("guidance: attribute success against diversity")
            paths.append(save(fig, self.out_dir / "tradeoff.png"))
        return paths
