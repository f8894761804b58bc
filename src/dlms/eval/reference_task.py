"""`dlms eval --references`: a run's responses to prompts, scored against their references.

Where the prompts and references come from (`load_reference_groups`):

- `True` (a bare `--references`): the validation split of a run trained on prompt/response data
  (of `dataset` when given, else the run's own data), read untokenized exactly as the build
  splits it, so references are whole even where a training row was cut to fit;
- a task file: JSONL of ``{"prompt": ..., "references": [...]}`` (tasks.read_reference_task);
- any other path: prompt/response rows in the run's columns (`data.prompt_column`,
  `data.response_column`, or `data.messages_column`; a .jsonl/.csv/.tsv file, a folder or a
  saved dataset), every row used.

Rows of one prompt (and task) are grouped: one response per distinct prompt, in order of first
appearance, scored against all of that prompt's references (references.py). A prompt/response
run answers with `DiffusionLM.respond`; a run trained on plain text can only continue the
prompts of a task file (`generate_continuations`). Prompt i is sampled with seed `seed + i`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DataError, DlmsError
from .references import group_references, reference_figures

PLAIN_RUN_FIX = ('pass --references FILE with a JSONL of {"prompt": ..., "references": [...]} to score its '
                 "continuations, or train on prompt/response data (data.format=prompt_response)")


@dataclass
class ReferenceGroups:
    """Distinct prompts with their references: `prompts[i]` (str), `tasks[i]` (str or None) and
    `references[i]` (list of str) belong together; `source` says where they came from."""

    prompts: list[str]
    tasks: list[str | None]
    references: list[list[str]]
    source: str
    notes: list[str] = field(default_factory=list)


def refuse_dglm_run(checkpoint: str | Path) -> None:
    """DlmsError for a DGLM run folder: it learns continuations of text, never prompt/response pairs."""
    from ..run_folder import DGLM_RUN_CONFIG as DGLM_CONFIG

    if (Path(checkpoint) / DGLM_CONFIG).is_file():
        raise DlmsError(f"'{checkpoint}' is a DGLM run, which learns continuations of text, not responses to "
                        "prompts, so it has no responses to score against references; evaluate it with "
                        "`dlms dglm eval`, or train a masked, block, gaussian or ar run with "
                        "data.format=prompt_response")


def _is_task_file(path: Path) -> bool:
    """Whether `path` is a JSONL task file: its first object has a `references` key."""
    if not path.is_file() or path.suffix.lower() != ".jsonl":
        return False
    try:
        with path.open("r", encoding="utf-8-sig") as fh:
            first = next((line for line in fh if line.strip()), "")
        return isinstance(row := json.loads(first), dict) and "references" in row
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False  # read as prompt/response data, whose reader names the problem


def _groups(rows, source: str) -> ReferenceGroups:
    """ReferenceGroups of (prompt, task, reference) rows."""
    grouped = group_references(((prompt, task), reference) for prompt, task, reference in rows)
    keys = list(grouped)
    return ReferenceGroups([p for p, _ in keys], [t for _, t in keys], list(grouped.values()), source)


def load_reference_groups(lm, references: str | Path | bool, dataset: str | None = None) -> ReferenceGroups:
    """The prompts and references to score `lm` on (see the module docstring); DlmsError for a
    source the run cannot answer (a run trained on plain text takes task files only)."""
    cfg = lm.cfg.data
    if references is True:
        if not lm.prompted:
            raise DlmsError("references=True scores the responses of a run trained on prompt/response data to its "
                            "validation prompts; this run was trained on plain text: pass the path of a task file "
                            "(JSONL of {prompt, references}), or train with data.format=prompt_response",
                            cli="--references without a file scores the responses of a run trained on "
                                "prompt/response data to its validation prompts; this run was trained on plain "
                                f"text: {PLAIN_RUN_FIX}")
        return _validation_groups(lm, dataset or cfg.dataset)
    path = Path(str(references)).expanduser()
    if not path.exists():
        raise DataError(f"references file '{path}' does not exist; pass a JSONL of {{prompt, references}} or a "
                        "file of prompt/response rows")
    if _is_task_file(path):
        from .tasks import read_reference_task

        items = read_reference_task(path)
        rows = [(it["prompt"], it.get("task") if isinstance(it.get("task"), str) else None, ref)
                for it in items for ref in it["references"]]
        return _groups(rows, str(path))
    if not lm.prompted:
        raise DlmsError(f"'{path}' holds prompt/response rows, but this run was trained on plain text and answers "
                        "no prompts: pass the path of a task file (JSONL of {prompt, references}) to score its "
                        "continuations, or train on prompt/response data (data.format=prompt_response)",
                        cli=f"--references '{path}' holds prompt/response rows, but this run was trained on plain "
                            f"text and answers no prompts: {PLAIN_RUN_FIX}")
    from ..data.sources import read_examples

    chat = cfg.messages_column is not None  # a run trained on chat messages reads references from its column
    examples = read_examples(str(path), prompt_column=None if chat else cfg.prompt_column,
                             response_column=cfg.response_column, task_column=cfg.task_column,
                             messages_column=cfg.messages_column)
    return _groups(((ex["prompt"], ex.get("task"), ex["response"]) for ex in examples), str(path))


def _validation_groups(lm, data_path: str) -> ReferenceGroups:
    """The validation split of `data_path` split as the run's data section splits it, with a note
    when some of its prompts are training prompts too (their references were trained on)."""
    from ..assembly import builder_from_config

    builder = builder_from_config(lm.cfg.data)
    val = builder.split_examples(data_path, "val")
    if not val:
        raise DataError(f"the run's validation split of '{data_path}' is empty (data.val_fraction is 0): there are "
                        "no validation prompts to score; pass a file of prompts and references instead")
    groups = _groups(((ex["prompt"], ex.get("task"), ex["response"]) for ex in val),
                     f"validation split of {data_path}")
    trained = {(ex["prompt"], ex.get("task")) for ex in builder.split_examples(data_path, "train")}
    shared = sum(key in trained for key in zip(groups.prompts, groups.tasks))
    if shared:
        groups.notes.append(f"{shared} of {len(groups.prompts)} validation prompts are training prompts too (the "
                            "split is by row, not by prompt): the model was trained on some of their references; "
                            "put all rows of one prompt on one side (see scripts/prepare_e2e.py)")
    return groups


def evaluate_with_references(lm, groups: ReferenceGroups, *, num_prompts: int | None = None, seed: int = 0,
                             steps: int | None = None, sampler: str | None = None, label: str | None = None,
                             sampling: dict[str, Any] | None = None, show: int = 5) -> dict[str, Any]:
    """Generate one response per distinct prompt and score it against that prompt's references.

    `groups`: from `load_reference_groups(lm, references, dataset)`; `num_prompts`: the first N
    distinct prompts (None: all). `steps`, `sampler`, `label` (a class, or "none") and `sampling`
    (the other sampler options by `DiffusionLM.sample`'s argument names) go to every generation.
    Returns the figures of references.reference_figures prefixed `ref_`, `ref_source`,
    `ref_examples` (the first `show` as {"prompt", "response", "reference": the first one}) and
    `notes` (a list, possibly empty).
    """
    from ..checks import check_int

    check_int("num_prompts", num_prompts, 1)
    count = len(groups.prompts) if num_prompts is None else min(num_prompts, len(groups.prompts))
    prompts, tasks, refs = groups.prompts[:count], groups.tasks[:count], groups.references[:count]
    options = {"steps": steps, "sampler": sampler, **(sampling or {})}
    if label is not None and label.lower() != "none":
        options["label"] = label
    if lm.prompted:
        responses = lm.respond(prompts, task=tasks, seed=seed, **options)
    else:
        responses = lm.generate_continuations(prompts, seed=seed, **options)
    figures = reference_figures(prompts, responses, refs)
    return {"ref_source": groups.source, **{f"ref_{k}": v for k, v in figures.items()},
            "ref_examples": [{"prompt": p, "response": r, "reference": rs[0]}
                             for p, r, rs in zip(prompts[:show], responses[:show], refs[:show])],
            "notes": groups.notes}
