"""Downstream tasks over a `DiffusionLM`: conditional generation against references, and
multiple choice.

Conditional generation (e.g. E2E NLG data-to-text): a task file is JSONL, one object per line,

    {"prompt": "name[The Vaults], eatType[pub] =", "references": ["The Vaults is a pub.", ...]}

`read_reference_task` validates it, `evaluate_references` generates one continuation per prompt
and scores the outputs with corpus BLEU and ROUGE against all references of their prompt.
`prepare_e2e` turns the E2E NLG CSV (columns `mr`, `ref`) into a training text file and such a
task file, split by meaning representation.

Multiple choice (MMLU-style): JSONL with `question` (str), `choices` (at least 2 strings) and
`answer` (the index of the right choice, or its letter "A".."Z"). `read_multiple_choice`
validates it, `evaluate_multiple_choice` scores every choice as a continuation of the question
and reports accuracy (lm-evaluation-harness conventions for `acc` and `acc_norm`).

Every error a user can cause is a `DataError` whose one-line message names the problem and the fix.
"""
from __future__ import annotations

import csv
import json
import math
import random
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..data.jsonl import read_objects
from ..errors import DataError
from .text_metrics import corpus_bleu, rouge

REFERENCE_FIX = 'write one object per line: {"prompt": "...", "references": ["...", ...]}'
CHOICE_FIX = 'write one object per line: {"question": "...", "choices": ["...", "..."], "answer": 0 or "A"}'
E2E_FILES = {"train_txt": "train.txt", "val_jsonl": "val.jsonl", "val_txt": "val.txt"}


# --------------------------------------------------------------------------------------------
# Reading task files


def _read_objects(path: str | Path, fix: str) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a JSONL file; DataError on anything else."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a file" if path.exists() else "does not exist"
        raise DataError(f"task file '{path}' {what}; pass the path of a .jsonl task file")
    found = False
    try:
        for lineno, row in read_objects(path, name=f"task file '{path}'", fix=fix):
            found = True
            yield lineno, row
    except UnicodeDecodeError:
        raise DataError(f"task file '{path}' is not UTF-8 text; save it as UTF-8 JSONL") from None
    if not found:
        raise DataError(f"task file '{path}' is empty; {fix}")


def _text_and_strings(row: Any, where: str, text: str, strings: str, fix: str, also: tuple[str, ...] = ()) -> list:
    """`row[strings]`, once `row` is an object with the keys `text`, `strings` and `also`, its
    `text` a string and its `strings` a list of strings; else one DataError line ending in `fix`."""
    if not isinstance(row, dict):
        raise DataError(f"{where} is a {type(row).__name__}, not an object; {fix}")
    for key in (text, strings, *also):
        if key not in row:
            raise DataError(f"{where} has no '{key}' key; {fix}")
    if not isinstance(row[text], str):
        raise DataError(f"{where}: '{text}' is a {type(row[text]).__name__}, not a string; {fix}")
    items = row[strings]
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise DataError(f"{where}: '{strings}' must be a list of strings; {fix}")
    return items


def _check_reference_item(row: Any, where: str) -> dict:
    """A validated copy of one conditional-generation item (other keys are kept)."""
    refs = _text_and_strings(row, where, "prompt", "references", REFERENCE_FIX)
    if not refs:
        raise DataError(f"{where}: 'references' is empty; give every prompt at least one reference")
    if any(not r.strip() for r in refs):
        raise DataError(f"{where}: 'references' holds an empty string; remove it or write the reference text")
    return {**row, "references": list(refs)}


def _answer_index(answer: Any, num_choices: int, where: str) -> int:
    """An answer given as an index or as a letter ("A" = 0), checked against the number of choices."""
    if isinstance(answer, str):
        letter = answer.strip().upper()
        if len(letter) != 1 or not "A" <= letter <= "Z":
            raise DataError(f"{where}: answer {answer!r} is not a letter A..Z; give the letter or the index "
                            "of the right choice")
        index = ord(letter) - ord("A")
    elif isinstance(answer, int) and not isinstance(answer, bool):
        index = answer
    else:
        raise DataError(f"{where}: answer {answer!r} is neither an index nor a letter; give the index (0 = "
                        "first choice) or the letter (A = first choice)")
    if not 0 <= index < num_choices:
        raise DataError(f"{where}: answer {answer!r} is out of range for {num_choices} choices; give an index "
                        f"0..{num_choices - 1} or a letter A..{chr(ord('A') + num_choices - 1)}")
    return index


def _check_choice_item(row: Any, where: str) -> dict:
    """A validated copy of one multiple-choice item, its answer as an index (other keys are kept)."""
    choices = _text_and_strings(row, where, "question", "choices", CHOICE_FIX, also=("answer",))
    if len(choices) < 2:
        raise DataError(f"{where}: {len(choices)} choice(s); give at least 2 choices")
    if any(not c.strip() for c in choices):
        raise DataError(f"{where}: a choice is empty; every choice needs some text")
    return {**row, "choices": list(choices), "answer": _answer_index(row["answer"], len(choices), where)}


def read_reference_task(path: str | Path) -> list[dict]:
    """The items of a conditional-generation task file: [{"prompt": str, "references": [str, ...]}].

    JSONL, one object per non-blank line, each with `prompt` (a string) and `references` (a list of
    at least one non-empty string); other keys are kept. Raises DataError for a missing or empty
    file, a line that is not a JSON object (the message gives its line number), a missing key or
    an empty reference list.
    """
    return [_check_reference_item(row, f"task file '{path}' line {lineno}")
            for lineno, row in _read_objects(path, REFERENCE_FIX)]


def read_multiple_choice(path: str | Path) -> list[dict]:
    """The items of a multiple-choice file: [{"question": str, "choices": [str, ...], "answer": int}].

    JSONL, one object per non-blank line, each with `question`, `choices` (at least 2 non-empty
    strings) and `answer`: the index of the right choice, or its letter ("A" = index 0, case
    ignored), returned as the index. Other keys (e.g. a subject) are kept. Raises DataError for a
    missing or empty file, a bad line (with its line number), a missing key, fewer than 2 choices
    or an answer out of range.
    """
    return [_check_choice_item(row, f"task file '{path}' line {lineno}")
            for lineno, row in _read_objects(path, CHOICE_FIX)]


def _take(items: Sequence[Any], max_items: int | None, kind: str) -> list[Any]:
    if max_items is not None and (isinstance(max_items, bool) or not isinstance(max_items, int) or max_items < 1):
        raise DataError(f"max_items must be a positive integer or None, got {max_items!r}")
    items = list(items)[:max_items] if max_items is not None else list(items)
    if not items:
        raise DataError(f"no {kind} items to evaluate; pass a non-empty task file")
    return items


# --------------------------------------------------------------------------------------------
# Conditional generation


def evaluate_references(lm, items: Sequence[dict], *, max_items: int | None = None, seed: int = 0,
                        length: int | None = None, **sampling: Any) -> dict[str, Any]:
    """Generate one continuation per prompt and score the outputs against the references.

    `items`: as `read_reference_task` returns them (the first `max_items` are used). Outputs come
    from `lm.generate_continuations(prompts, length, seed=seed, **sampling)` (the text after the
    prompt; prompt i is sampled with seed `seed + i`, so the result is fixed by `seed` and
    `sampling`: steps, sampler, temperature, top_p, label, ...). Returns
    {"items": n, "bleu": corpus BLEU (sacrebleu, 0..100), "rouge1", "rouge2", "rougeL" (mean best
    F1 over each prompt's references, 0..1), "examples": the first 3 as {"prompt", "output",
    "reference" (the first reference)}}.
    """
    items = [_check_reference_item(row, f"item {i}") for i, row in enumerate(_take(items, max_items, "reference"))]
    prompts = [row["prompt"] for row in items]
    outputs = list(lm.generate_continuations(prompts, length, seed=seed, **sampling))
    if len(outputs) != len(prompts):
        raise DataError(f"the model returned {len(outputs)} continuations for {len(prompts)} prompts; "
                        "generate_continuations must return one per prompt")
    references = [row["references"] for row in items]
    scores = rouge(outputs, references)
    return {
        "items": len(items),
        "bleu": corpus_bleu(outputs, references),
        **{key: float(scores[key]) for key in ("rouge1", "rouge2", "rougeL")},
        "examples": [{"prompt": p, "output": o, "reference": r[0]}
                     for p, o, r in zip(prompts[:3], outputs[:3], references[:3])],
    }


def _clean(text: str) -> str:
    """Runs of whitespace (newlines included) as one space, so that a record stays on one line."""
    return " ".join(text.split())


def prepare_e2e(csv_path: str | Path, out_dir: str | Path, *, val_fraction: float = 0.1,
                seed: int = 0) -> dict[str, Path]:
    """Split the E2E NLG CSV by meaning representation and write training text and a task file.

    The CSV (e.g. E2E's `devset.csv`) has a header with columns `mr` (a meaning representation such
    as ``name[The Vaults], eatType[pub], priceRange[more than £30]``) and `ref` (one human
    sentence); several rows share one mr. Whitespace runs in both are collapsed to one space.
    The distinct mrs are sorted, shuffled with ``random.Random(seed)``, and the last
    ``max(1, round(n * val_fraction))`` of them go to validation (every mr with all its refs lands
    on one side; at least one mr stays on each side). Writes to `out_dir`:

    - ``train.txt``: one line per training row, ``f"{mr} = {ref}"`` (the text to train on);
    - ``val.jsonl``: a `read_reference_task` file, one item per validation mr, prompt
      ``f"{mr} ="`` and all its refs as references (mrs and refs in file order);
    - ``val.txt``: the validation rows in the format of train.txt.

    Returns {"train_txt", "val_jsonl", "val_txt"}: the paths written. Raises DataError for a
    missing file, missing columns, an empty cell, fewer than 2 distinct mrs or a bad val_fraction.
    """
    path = Path(csv_path)
    if not path.is_file():
        raise DataError(f"E2E file '{path}' does not exist; pass the path of the E2E NLG CSV (e.g. devset.csv)")
    if not isinstance(val_fraction, (int, float)) or not 0 < val_fraction < 1:
        raise DataError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction!r}")
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    rows: list[tuple[str, str]] = []
    with path.open("r", encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in ("mr", "ref") if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"E2E file '{path}' has no column(s) {', '.join(missing)} (header: "
                            f"{', '.join(reader.fieldnames or []) or 'none'}); pass a CSV with columns mr,ref")
        for record in reader:
            mr, ref = _clean(record.get("mr") or ""), _clean(record.get("ref") or "")
            if not mr or not ref:
                raise DataError(f"E2E file '{path}' line {reader.line_num} has an empty mr or ref; "
                                "fill it in or delete the row")
            rows.append((mr, ref))
    mrs = sorted({mr for mr, _ in rows})
    if len(mrs) < 2:
        raise DataError(f"E2E file '{path}' has {len(mrs)} distinct mr(s); the split needs at least 2")
    random.Random(seed).shuffle(mrs)
    num_val = min(max(1, round(len(mrs) * val_fraction)), len(mrs) - 1)
    val_mrs = set(mrs[len(mrs) - num_val:])

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {key: out / name for key, name in E2E_FILES.items()}
    refs_of: dict[str, list[str]] = {}
    with paths["train_txt"].open("w", encoding="utf-8", newline="\n") as train, \
            paths["val_txt"].open("w", encoding="utf-8", newline="\n") as val:
        for mr, ref in rows:
            (val if mr in val_mrs else train).write(f"{mr} = {ref}\n")
            if mr in val_mrs:
                refs_of.setdefault(mr, []).append(ref)  # dicts keep the file order of first appearance
    with paths["val_jsonl"].open("w", encoding="utf-8", newline="\n") as fh:
        for mr, refs in refs_of.items():
            fh.write(json.dumps({"prompt": f"{mr} =", "references": refs}, ensure_ascii=False) + "\n")
    return paths


# --------------------------------------------------------------------------------------------
# Multiple choice


def choice_prompt(question: str) -> str:
    """The context every choice of a question is scored after."""
    return f"Question: {question}\nAnswer:"


def evaluate_multiple_choice(lm, items: Sequence[dict], *, passes: int | None = None, seed: int = 0,
                             max_items: int | None = None, batch_size: int = 32) -> dict[str, Any]:
    """Accuracy on multiple-choice items by the likelihood of each choice.

    `items`: as `read_multiple_choice` returns them (the first `max_items` are used; letter answers
    are accepted here too). Each choice is scored as the continuation ``" " + choice`` of the
    context ``f"Question: {question}\\nAnswer:"`` with `lm.score_continuations`; the prediction for
    "acc" is the choice with the highest log-likelihood, for "acc_norm" the highest
    log-likelihood per character of the choice (as lm-evaluation-harness does; it favours longer
    choices less than "acc" favours short ones). Ties go to the first choice.

    For an autoregressive model the score is the exact log-likelihood ("likelihood": "exact").
    For a diffusion model it is minus the ELBO, a Monte Carlo estimate (`passes` samples per
    choice, default the run's eval.elbo_passes) of a *lower bound* on the log-likelihood
    ("likelihood": "elbo"). Every choice has its own random stream seeded by `seed` and its
    position, so the results are fixed by `seed` (and `passes`) and do not depend on
    `batch_size`.

    Returns {"items": n, "acc", "acc_norm", "acc_se" (binomial standard error of acc,
    sqrt(acc (1 - acc) / n)), "likelihood": "exact" or "elbo"}.
    """
    items = [_check_choice_item(row, f"item {i}") for i, row in enumerate(_take(items, max_items, "multiple-choice"))]
    pairs = [(choice_prompt(row["question"]), " " + choice) for row in items for choice in row["choices"]]
    scores = lm.score_continuations(pairs, passes=passes, seed=seed, batch_size=batch_size)
    if len(scores) != len(pairs):
        raise DataError(f"the model returned {len(scores)} scores for {len(pairs)} choices; "
                        "score_continuations must return one per pair")
    correct = correct_norm = 0
    start = 0
    for row in items:
        choices = row["choices"]
        logprobs = np.array([float(s["logprob"]) for s in scores[start : start + len(choices)]])
        start += len(choices)
        lengths = np.array([float(len(c)) for c in choices])
        correct += int(np.argmax(logprobs)) == row["answer"]
        correct_norm += int(np.argmax(logprobs / lengths)) == row["answer"]
    n = len(items)
    acc = correct / n
    return {
        "items": n,
        "acc": acc,
        "acc_norm": correct_norm / n,
        "acc_se": math.sqrt(acc * (1 - acc) / n),
        "likelihood": "elbo" if lm.method.stochastic_bound else "exact",
    }
