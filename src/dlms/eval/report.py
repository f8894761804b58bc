"""The evaluation suite of one trained run, for every method: one entry point, JSON and Markdown.

- likelihood: the validation NLL per token, exact for AR; for diffusion the continuous-time ELBO
  bound and the discrete-time bound with `discrete_steps` steps side by side, each with its Monte
  Carlo standard error (per-sequence seeded noise: independent of the batch size);
- generation: samples scored by eval/generation.py (unigram entropy, distinct-1/2/3, self-BLEU,
  perplexity under an `evaluator`, MAUVE against validation texts with the evaluator's features,
  grammaticality and label accuracy on the built-in corpus, accuracy by a given `classifier`);
- conditional generation against references (BLEU, ROUGE; e.g. E2E prepared by eval/tasks.py)
  and multiple choice scored by likelihood (the ELBO for diffusion).
"""
from __future__ import annotations

import time
from typing import Any

from .evaluator import load_evaluator
from .generation import generation_figures


def evaluate_run(checkpoint: str, *, dataset: str | None = None, evaluator: str | None = None,
                 ar_checkpoint: str | None = None, passes: int | None = None, max_sequences: int | None = None,
                 batch_size: int | None = None, discrete_steps: int | None = None, num_samples: int = 64,
                 num_steps: int | None = None, sampler: str | None = None, seed: int = 0, device: str = "auto",
                 precision: str | None = None,
                 label: str | None = None, temperature: float | None = None, top_p: float | None = None,
                 eta: float | None = None, clamp: bool | None = None, mauve: bool = False, classifier: str | None = None, references: str | None = None,
                 multiple_choice: str | None = None, max_items: int | None = None) -> dict[str, Any]:
    """Evaluate the run in `checkpoint`; returns a flat dict of figures (plus `examples`).

    `passes=0` skips the likelihood, `num_samples=0` the generation figures. Samples of a model
    trained with labels are drawn for every class in turn unless `label` names one class, or is
    "none" for the unconditional (null-class) model. `evaluator` (or its older name
    `ar_checkpoint`): a dlms 'ar' run or a Hugging Face causal LM folder. `discrete_steps`
    defaults to the run's sampling steps.
    """
    from ..checks import check_int
    from ..model import DiffusionLM

    check_int("passes", passes, 0)
    check_int("num_samples", num_samples, 0, optional=False)
    for name, value in (("batch_size", batch_size), ("max_sequences", max_sequences), ("num_steps", num_steps),
                        ("discrete_steps", discrete_steps), ("max_items", max_items)):
        check_int(name, value, 1)
    lm = DiffusionLM.load_checkpoint(checkpoint, device=device, precision=precision)
    judge_spec = evaluator or ar_checkpoint
    judge = load_evaluator(judge_spec, device=device) if judge_spec else None
    results: dict[str, Any] = {"checkpoint": str(checkpoint), "method": lm.method.name, "precision": lm.precision}
    if passes != 0:
        results.update(_likelihood(lm, dataset, passes, max_sequences, batch_size, seed,
                                   discrete_steps or lm.cfg.sample.num_steps))
    if num_samples > 0:
        results.update(_generation(lm, judge, num_samples, num_steps, sampler, seed, label, temperature, top_p,
                                   dataset, mauve, classifier, {"eta": eta, "clamp": clamp}))
    if references:
        from .tasks import evaluate_references, read_reference_task

        task = evaluate_references(lm, read_reference_task(references), max_items=max_items, seed=seed,
                                   steps=num_steps, sampler=sampler, temperature=temperature, top_p=top_p)
        results.update({f"ref_{k}": v for k, v in task.items() if k != "examples"})
    if multiple_choice:
        from .tasks import evaluate_multiple_choice, read_multiple_choice

        mc = evaluate_multiple_choice(lm, read_multiple_choice(multiple_choice), passes=passes or None, seed=seed,
                                      max_items=max_items)
        results.update({f"mc_{k}": v for k, v in mc.items()})
    return results


def _likelihood(lm, dataset, passes, max_sequences, batch_size, seed, discrete_steps) -> dict[str, Any]:
    kwargs = dict(passes=passes, max_sequences=max_sequences, batch_size=batch_size, seed=seed)
    out = {f"val_{k}": v for k, v in lm.evaluate(dataset, **kwargs).items()}
    if getattr(lm.method, "supports_discrete_bound", lm.method.stochastic_bound):
        discrete = lm.evaluate(dataset, discrete_steps=discrete_steps, **kwargs)
        out.update({"val_discrete_steps": discrete_steps, "val_discrete_nll": discrete["nll"],
                    "val_discrete_ppl": discrete["ppl"], "val_discrete_se": discrete["se"]})
    return out


def _generation(lm, judge, num_samples, num_steps, sampler, seed, label, temperature, top_p, dataset, mauve,
                classifier, gaussian_options) -> dict[str, Any]:
    if label is None:
        labels = lm.balanced_labels(num_samples)
    else:
        labels = None if label.lower() == "none" else [label] * num_samples
    start = time.perf_counter()
    ids = lm.sample_ids(num_samples=num_samples, steps=num_steps, sampler=sampler, seed=seed, label=labels,
                        temperature=temperature, top_p=top_p, **gaussian_options)
    elapsed = time.perf_counter() - start
    texts = lm.decode(ids)
    rows = [lm.tokenizer.encode(t, add_special_tokens=False) for t in texts]
    s = lm.cfg.sample
    chosen = sampler or s.sampler
    out: dict[str, Any] = {
        "samples": num_samples, "sampler": chosen if chosen != "auto" else lm.method.default_sampler,
        "sample_steps": num_steps or s.num_steps,
        "temperature": s.temperature if temperature is None else temperature,
        "top_p": s.top_p if top_p is None else top_p, "labels": "balanced" if label is None and labels else label,
        "sample_tokens_per_s": ids.numel() / elapsed,
    }
    builtin = (dataset or lm.cfg.data.dataset).startswith("builtin")
    out.update(generation_figures(texts, rows, evaluator=judge, builtin=builtin, labels=labels,
                                  label_column=lm.cfg.data.label_column))
    validation = lm.dataset(dataset).val if lm.cfg.data.layout == "padded" or mauve else None
    if lm.cfg.data.layout == "padded":  # one example per row: the length the samples should have
        reference = validation.texts(lm.tokenizer, n=max(num_samples, 200))
        out["data_mean_words"] = sum(len(t.split()) for t in reference) / max(len(reference), 1)
    if mauve:
        if judge is None:
            from ..errors import DlmsError

            raise DlmsError("MAUVE needs features from an evaluator model; pass evaluator=<an AR run or HF model>",
                            cli="MAUVE needs features from an evaluator model; pass --evaluator")
        from .text_metrics import mauve_score

        human = validation.texts(lm.tokenizer, n=num_samples)
        out["mauve"] = mauve_score(judge.features(human), judge.features(texts), seed=seed)
    if classifier and labels is not None:
        from .attributes import AttributeClassifier

        out["classifier_accuracy"] = AttributeClassifier(classifier).accuracy(texts, labels)
    out["examples"] = texts[:5]
    return out


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
