"""The evaluation suite of one trained run, for every method: one entry point, JSON and Markdown.

- likelihood: the validation NLL per token, exact for AR; for diffusion the continuous-time ELBO
  bound and the discrete-time bound with `discrete_steps` steps side by side, each with its Monte
  Carlo standard error (per-sequence seeded noise: independent of the batch size);
- generation: samples scored by eval/generation.py (length and unigram entropy beside the data's
  own, computed the same way on validation texts, their gaps and `at_data_length`; distinct-1/2/3,
  self-BLEU, perplexity under an `evaluator` that is never the evaluated run itself, MAUVE against
  validation texts with the evaluator's features, grammaticality and label accuracy on the
  built-in corpus, accuracy by a given `classifier`). Without an evaluator there is no `gen_ppl`
  (a model never scores its own samples) and `notes` says so;
- responses (or continuations) against references (`ref_*`: BLEU, ROUGE, lengths, empty
  responses, E2E slot coverage; eval/reference_task.py, eval/references.py) and multiple choice
  scored by likelihood (the ELBO for diffusion).

A run trained on prompt/response data is scored as such: the likelihood is the response's given
the prompt (per response token), and the samples are its responses to validation prompts, beside
the validation responses (`data_*` figures, MAUVE).
"""
from __future__ import annotations

import time
from typing import Any

from .evaluator import check_independent, load_evaluator
from .generation import DATA_TEXTS, data_diversity_note, data_length_note, data_reference_texts, generation_figures

NO_EVALUATOR_NOTE = ("no gen_ppl: no independent evaluator was given (a model never scores its own samples); "
                     "pass --evaluator with an AR run that is not one of the models compared (another seed or "
                     "split) or a Hugging Face LM")


def evaluate_run(checkpoint: str, *, dataset: str | None = None, evaluator: str | None = None,
                 ar_checkpoint: str | None = None, passes: int | None = None, max_sequences: int | None = None,
                 batch_size: int | None = None, discrete_steps: int | None = None, num_samples: int = 64,
                 num_steps: int | None = None, sampler: str | None = None, seed: int = 0, device: str = "auto",
                 precision: str | None = None,
                 label: str | None = None, sampling: dict[str, Any] | None = None,
                 mauve: bool = False, classifier: str | None = None, references: str | bool | None = None,
                 multiple_choice: str | None = None, max_items: int | None = None, num_prompts: int | None = None,
                 show: int = 5) -> dict[str, Any]:
    """Evaluate the run in `checkpoint`; returns a flat dict of figures (plus `examples`).

    `passes=0` skips the likelihood, `num_samples=0` the generation figures. Samples of a model
    trained with labels are drawn for every class in turn unless `label` names one class, or is
    "none" for the unconditional (null-class) model. `evaluator` (or its older name
    `ar_checkpoint`): a dlms 'ar' run or a Hugging Face causal LM folder, never `checkpoint`
    itself (DlmsError); without one there is no `gen_ppl`. `discrete_steps` defaults to the
    run's sampling steps. `show`: how many samples are kept in `examples`. `notes`: one-line
    remarks (no evaluator, samples not at the data's length) when there are any.
    `references`: True (the validation prompts of a prompt/response run) or a file, scored by
    reference_task.evaluate_with_references on its first `num_prompts` distinct prompts (default
    `max_items`, else all); `ref_examples` keeps `show` of them.
    """
    from ..checks import check_int
    from ..model import DiffusionLM

    check_int("passes", passes, 0)
    check_int("num_samples", num_samples, 0, optional=False)
    for name, value in (("batch_size", batch_size), ("max_sequences", max_sequences), ("num_steps", num_steps),
                        ("discrete_steps", discrete_steps), ("max_items", max_items),
                        ("num_prompts", num_prompts)):
        check_int(name, value, 1)
    check_int("show", show, 0, optional=False)
    judge_spec = evaluator or ar_checkpoint
    score_references = references not in (None, False)
    if score_references:
        from .reference_task import refuse_dglm_run

        refuse_dglm_run(checkpoint)
    if judge_spec:
        check_independent(checkpoint, judge_spec)  # before minutes of loading and sampling
    lm = DiffusionLM.load_checkpoint(checkpoint, device=device, precision=precision)
    if score_references:  # a source this run cannot answer fails before minutes of other figures
        from .reference_task import load_reference_groups

        reference_groups = load_reference_groups(lm, references, dataset)
    judge = load_evaluator(judge_spec, device=device) if judge_spec else None
    sampling = dict(sampling or {})
    results: dict[str, Any] = {"checkpoint": str(checkpoint), "method": lm.method.name, "precision": lm.precision}
    if judge_spec:
        results["evaluator"] = str(judge_spec)
    notes: list[str] = []
    if passes != 0:
        results.update(_likelihood(lm, dataset, passes, max_sequences, batch_size, seed,
                                   discrete_steps or lm.cfg.sample.num_steps))
    if num_samples > 0:
        results.update(_generation(lm, judge, num_samples, num_steps, sampler, seed, label, sampling,
                                   dataset, mauve, classifier, show))
        if judge is None:
            notes.append(NO_EVALUATOR_NOTE)
        for note in (data_length_note(results), data_diversity_note(results)):
            if note:
                notes.append(note)
    if score_references:
        from .reference_task import evaluate_with_references

        task = evaluate_with_references(lm, reference_groups, num_prompts=num_prompts or max_items, seed=seed,
                                        steps=num_steps, sampler=sampler, label=label, sampling=sampling, show=show)
        notes += task.pop("notes")
        results.update(task)
    if multiple_choice:
        from .tasks import evaluate_multiple_choice, read_multiple_choice

        mc = evaluate_multiple_choice(lm, read_multiple_choice(multiple_choice), passes=passes or None, seed=seed,
                                      max_items=max_items)
        results.update({f"mc_{k}": v for k, v in mc.items()})
    if notes:
        results["notes"] = notes
    return results


def _likelihood(lm, dataset, passes, max_sequences, batch_size, seed, discrete_steps) -> dict[str, Any]:
    kwargs = dict(passes=passes, max_sequences=max_sequences, batch_size=batch_size, seed=seed)
    out = {f"val_{k}": v for k, v in lm.evaluate(dataset, **kwargs).items()}
    if lm.method.supports_discrete_bound:
        discrete = lm.evaluate(dataset, discrete_steps=discrete_steps, **kwargs)
        out.update({"val_discrete_steps": discrete_steps, "val_discrete_nll": discrete["nll"],
                    "val_discrete_ppl": discrete["ppl"], "val_discrete_se": discrete["se"]})
    return out


def _generation(lm, judge, num_samples, num_steps, sampler, seed, label, sampling, dataset, mauve,
                classifier, show) -> dict[str, Any]:
    if label is None:
        labels = lm.balanced_labels(num_samples)
    else:
        labels = None if label.lower() == "none" else [label] * num_samples
    data = lm.dataset(dataset)
    if lm.prompted:
        labels = None  # one prompt per sample: the classes are not drawn in turn
        texts, tokens, elapsed, steps, calls = _responses(lm, data, num_samples, num_steps, sampler, seed, sampling)
    else:
        start = time.perf_counter()
        ids = lm.sample_ids(num_samples=num_samples, steps=num_steps, sampler=sampler, seed=seed, label=labels,
                            **sampling)
        elapsed = time.perf_counter() - start
        texts, tokens = lm.decode(ids), ids.numel()
        steps, calls = lm.last_sampler.stats.steps, lm.last_sampler.stats.network_calls
    chosen = lm.last_sampler
    # Every option the sampler ran with: what was passed, else the run's default (`auto` resolved).
    used = {o: v for o, v in lm.last_options.items() if o != "num_steps"}
    out: dict[str, Any] = {
        "samples": len(texts), "sampler": chosen.name, "sample_steps": steps,
        "network_calls": calls, **used,
        "labels": "balanced" if label is None and labels else label,
        "sample_tokens_per_s": tokens / elapsed,
    }
    builtin = (dataset or lm.cfg.data.dataset).startswith("builtin")
    # The data's own length and entropy, from validation texts drawn as the samples are (same
    # decoding, tokenizer and rows): the figures the samples' are compared with.
    if lm.prompted:
        reference = _validation_responses(lm, data, max(num_samples, DATA_TEXTS))
    else:
        reference = data_reference_texts(lm, data, n=max(num_samples, DATA_TEXTS), labels=labels)
    out.update(generation_figures(texts, tokenizer=lm.tokenizer, data_texts=reference, evaluator=judge,
                                  builtin=builtin, labels=labels, label_column=lm.cfg.data.label_column))
    validation = data.val
    if mauve:
        if judge is None:
            from ..errors import DlmsError

            raise DlmsError("MAUVE needs features from an evaluator model; pass evaluator=<an AR run or HF model>",
                            cli="MAUVE needs features from an evaluator model; pass --evaluator")
        from .text_metrics import mauve_score

        human = reference[:num_samples] if lm.prompted else validation.texts(lm.tokenizer, n=num_samples)
        out["mauve"] = mauve_score(judge.features(human), judge.features(texts), seed=seed)
    if classifier and labels is not None:
        from .attributes import AttributeClassifier

        out["classifier_accuracy"] = AttributeClassifier(classifier).accuracy(texts, labels)
    out["examples"] = texts[:show]
    return out


def _responses(lm, data, num_samples, num_steps, sampler, seed, sampling) -> tuple[list[str], int, float, int, int]:
    """(responses to `num_samples` validation prompts, tokens of their canvases, seconds, sampler
    steps and network calls summed over the prompts) of a prompt/response run."""
    from ..prompting import split_prompts

    texts, tokens, elapsed, steps, calls = [], 0, 0.0, 0, 0
    for i, (prompt, task, _) in enumerate(split_prompts(lm.prompts, data.val, num_samples)):
        start = time.perf_counter()
        ids = lm.sample_ids(prompt, steps=num_steps, task=task, sampler=sampler, seed=seed + i, **sampling)
        elapsed += time.perf_counter() - start
        texts += lm.decode(ids, len(lm.encode_prompt(prompt, task)))
        tokens += ids.numel()
        steps, calls = steps + lm.last_sampler.stats.steps, calls + lm.last_sampler.stats.network_calls
    return texts, tokens, max(elapsed, 1e-9), steps, calls


def _validation_responses(lm, data, n: int) -> list[str]:
    """The responses of `n` validation rows of a prompt/response run, decoded as its samples are."""
    import torch

    from ..prompting import split_prompts

    return [lm.decode(torch.tensor([response]), 0)[0] for _, _, response in split_prompts(lm.prompts, data.val, n)]


def format_table(results: dict[str, Any]) -> str:
    """The figures as a two-column Markdown table, then the notes (`note: ...`), the examples
    (`  sample: ...`) and the responses to reference prompts (`  prompt: ...  response: ...`), one
    line each."""
    lines = ["| figure | value |", "|---|---|"]
    for key, value in results.items():
        if key in ("examples", "notes", "ref_examples"):
            continue
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        lines.append(f"| {key} | {shown} |")
    for note in results.get("notes", []):
        lines.append(f"note: {note}")
    for text in results.get("examples", []):
        lines.append("  sample: " + text.replace("\r", "").replace("\n", "\\n"))
    for ex in results.get("ref_examples", []):
        lines.append("  prompt: " + " ".join(ex["prompt"].split()) + "  response: " + " ".join(ex["response"].split()))
    return "\n".join(lines)
