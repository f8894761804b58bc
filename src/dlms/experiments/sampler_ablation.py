"""`sampler-ablation`: sampler and number of denoising steps against quality and latency.

Per cell (sampler, steps): `num_samples` unconditional samples (each label in turn for a model
trained with labels), timed end to end (tokens/s of the sampler call), scored with the standard
generation figures (eval/generation.py): mean words and unigram entropy beside the data's own
(`length_gap`, `entropy_gap`, and `at_data_length`: a row whose samples are not at the data's
length makes no quality claim; report.md lists them), perplexity under an `evaluator` (never the
model sampled from), grammaticality on the built-in corpus, distinct-n, self-BLEU. Every cell
uses the same seed. Plots: each quality figure against steps (one line per sampler) and against
tokens/s.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .base import Experiment, register
from ..reporting.plots import as_float, new_grid, save


@register
class SamplerAblation(Experiment):
    name = "sampler-ablation"
    summary = "sampler and number of steps against quality and latency"
    options = {
        "checkpoint": None,  # else a model is trained from `base`
        "samplers": ["ancestral", "cached", "confidence"],
        "steps": [8, 16, 32, 64],
        "num_samples": 64,
        "temperature": None, "top_p": None,
        "evaluator": None,
        "seed": 0,
    }

    def cells(self) -> list[dict[str, Any]]:
        steps = self.option("steps")
        if not steps or any(not isinstance(s, int) or s < 1 for s in steps):
            raise ConfigError("steps must be a list of positive integers (denoising steps)")
        from ..samplers import SAMPLERS

        cells = []
        for sampler in self.option("samplers"):
            if "num_steps" in SAMPLERS.get(sampler).options:
                cells += [{"cell": f"{sampler}-{n}", "sampler": sampler, "steps": n} for n in steps]
            else:  # e.g. threshold: it decides its own steps; the row reports how many it took
                cells.append({"cell": sampler, "sampler": sampler, "steps": None})
        return cells

    def run_cell(self, cell: dict[str, Any], cell_dir: Path) -> list[dict[str, Any]]:
        from ..model import DiffusionLM

        lm = DiffusionLM.load_checkpoint(self.model_checkpoint())
        n = self.option("num_samples")
        labels = lm.balanced_labels(n)
        lm.sample_ids(num_samples=1, sampler=cell["sampler"], steps=cell["steps"], label=labels[:1] if labels else None)  # warm-up
        start = time.perf_counter()
        ids = lm.sample_ids(num_samples=n, sampler=cell["sampler"], steps=cell["steps"], label=labels,
                            seed=self.option("seed"), temperature=self.option("temperature"), top_p=self.option("top_p"))
        seconds = time.perf_counter() - start
        stats = lm.last_sampler.stats
        texts = lm.decode(ids)
        cell_dir.mkdir(parents=True, exist_ok=True)
        (cell_dir / "samples.txt").write_text("".join(t + "\n" for t in texts), encoding="utf-8")
        figures = self.sample_figures(lm, texts, labels)
        return [{"sampler": cell["sampler"], "steps": cell["steps"] or stats.steps, "network_calls": stats.network_calls,
                 "samples": n, "seconds": round(seconds, 3), "tokens_per_s": ids.numel() / seconds, **figures}]

    def plot(self, rows: list[dict[str, str]]) -> list[Path]:
        names = [k for k in ("gen_ppl", "grammatical", "unigram_entropy", "distinct_2") if k in rows[0]]
        paths = []
        for x_key, x_label, file in (("steps", "denoising steps", "quality_vs_steps.png"),
                                     ("tokens_per_s", "tokens/s", "quality_vs_speed.png")):
            fig, axes = new_grid(len(names), width=3.6)
            for ax, name in zip(axes, names):
                for sampler in sorted({r["sampler"] for r in rows}):
                    pts = sorted((as_float(r[x_key]), as_float(r[name])) for r in rows if r["sampler"] == sampler)
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=sampler)
                ax.set_xscale("log")
                ax.set_xlabel(x_label)
                ax.set_title(name)
                ax.legend(fontsize=7)
            paths.append(save(fig, self.out_dir / file))
        return paths
