"""One evaluation of a trained run: likelihood plus generation figures, as a dict and a table."""
from __future__ import annotations

import time
from typing import Any

from .generation import builtin_corpus_figures, distinct_n, unigram_entropy


def evaluate_run(checkpoint: str, *, dataset: str | None = None, ar_checkpoint: str | None = None,
                 passes: int | None = None, max_sequences: int | None = None, num_samples: int = 64,
                 num_steps: int | None = None, sampler: str | None = None, seed: int = 0,
                 device: str = "auto", label: str | None = None, temperature: float | None = None,
                 top_p: float | None = None) -> dict[str, Any]:
    """Validation NLL (bound) with its standard error, then `num_samples` samples scored for
    diversity, fluency under `ar_checkpoint`, and (built-in corpus) grammaticality.

    Samples of a model trained with labels are drawn for every class in turn (the same number of
    each) unless `label` names one class, or is "none" for the unconditional (null-class) model;
    on the built-in corpus `label_accuracy` is then the share that is grammatical and expresses
    its label. `temperature` / `top_p` default to the run's sample config.
    """
    from ..model import DiffusionLM

    lm = DiffusionLM.load_checkpoint(checkpoint, device=device)
    if label is None:
        labels = lm.balanced_labels(num_samples)
    else:
        labels = None if label.lower() == "none" else [label] * num_samples
    # passes=0 skips the likelihood (generation figures only)
    likelihood = {} if passes == 0 else lm.evaluate(dataset, passes=passes, max_sequences=max_sequences, seed=seed)
    results: dict[str, Any] = {"checkpoint": checkpoint, "method": lm.method.name,
                               **{f"val_{k}": v for k, v in likelihood.items()}}
    if num_samples > 0:
        start = time.perf_counter()
        ids = lm.sample_ids(num_samples=num_samples, steps=num_steps, sampler=sampler, seed=seed, label=labels,
                            temperature=temperature, top_p=top_p)
        elapsed = time.perf_counter() - start
        texts = lm.decode(ids)
        rows = [lm.tokenizer.encode(t, add_special_tokens=False) for t in texts]
        s = lm.cfg.sample
        results.update({
            "samples": num_samples, "sampler": chosen if (chosen := sampler or s.sampler) != "auto" else lm.method.default_sampler,
            "temperature": s.temperature if temperature is None else temperature,
            "top_p": s.top_p if top_p is None else top_p, "labels": "balanced" if label is None and labels else label, "sample_tokens_per_s": ids.numel() / elapsed,
            "unigram_entropy": unigram_entropy(rows), "distinct_1": distinct_n(texts, 1),
            "distinct_2": distinct_n(texts, 2),
        })
        if ar_checkpoint:
            evaluator = DiffusionLM.load_checkpoint(ar_checkpoint, device=device, expect_method="ar")
            scored = evaluator.score_texts(texts)
            results["gen_ppl"] = scored["ppl"]
        if (dataset or lm.cfg.data.dataset).startswith("builtin"):
            results.update(builtin_corpus_figures(texts, labels, lm.cfg.data.label_column if labels else None))
        results["examples"] = texts[:5]
    return results


def format_table(results: dict[str, Any]) -> str:
    """The figures as a two-column Markdown table (examples listed after it)."""
    lines = ["| figure | value |", "|---|---|"]
    for key, value in results.items():
        if key == "examples":
            continue
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        lines.append(f"| {key} | {shown} |")
    for text in results.get("examples", []):
        lines.append(f"  sample: {text}")
    return "\n".join(lines)
