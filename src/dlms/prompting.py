"""Prompts of a run trained on prompt/response data: laid out where training put them.

A run with `data.format: prompt_response` learnt rows `[bos] (task [sep]) prompt [sep] response
[eos] pad...` (dlms/data/prompt_response.py). `PromptLayout.head(prompt, task)` builds the same
head for sampling, so `DiffusionLM.sample(prompt=...)` and `respond` hold it fixed and the model
writes the response after it, ending at its end-of-text.

A run trained on chat messages (`data.messages_column`) takes a prompt as one user turn (or a
list of messages, or a `Conversation`) and renders it as its rows were: with the tokenizer's chat
template, or as plain `role: content` lines (dlms/data/chat.py). The prompts of its validation
rows come back already rendered (`RenderedPrompt`), so they are never wrapped twice.

The task: a run trained with a fixed `data.task` puts it before every prompt by itself (another
task is an error); a run trained with `data.task_column` takes one per call (`task=`), or none,
as its rows without a task were; any other run takes none.
"""
from __future__ import annotations

from collections.abc import Sequence

from .config import DataConfig
from .errors import ArgumentError, CheckpointError, literal
from .methods.base import SpecialTokens


class PromptLayout:
    """The head of a prompt/response row for one run (`on` False for a run trained on plain text)."""

    def __init__(self, data: DataConfig, tokenizer, special: SpecialTokens):
        self.on = data.format == "prompt_response"
        self.chat = self.on and data.messages_column is not None  # prompts are conversations (data/chat.py)
        self.fixed_task = data.task
        self.task_column = data.task_column
        self.tokenizer = tokenizer
        self.special = special
        if self.on and special.sep is None:
            raise CheckpointError("this run was trained on prompt/response data but its tokenizer has no separator "
                                  "token; the checkpoint is damaged: retrain it")

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def check_task(self, task: str | None) -> str | None:
        """The task text to put before a prompt: `task`, the run's fixed one, or None (ArgumentError
        for a task the run cannot take)."""
        if task is None:
            return self.fixed_task if self.on else None
        if not self.on:
            raise ArgumentError("{task} applies to a run trained on prompt/response data (data.format="
                                "prompt_response); this one was trained on plain text: drop {task}", task="task")
        if self.fixed_task is not None and task != self.fixed_task:
            raise ArgumentError("this run was trained with the one task data.task=" + literal(repr(self.fixed_task))
                                + ", which it puts before every prompt itself; drop {task}", task="task")
        if self.fixed_task is None and self.task_column is None:
            raise ArgumentError("this run was trained without tasks (neither data.task nor data.task_column); "
                                "drop {task}", task="task")
        return task

    def prompt_ids(self, prompt) -> list[int]:
        """The ids of a prompt as the run's rows hold it: its text's, or on a run trained on chat
        messages its conversation rendered (a str is one user turn; see data/chat.py)."""
        if self.chat:
            from .data.chat import as_conversation, conversation_ids

            return conversation_ids(self.tokenizer, [as_conversation(prompt)])[0]
        return self._encode(prompt) if prompt else []

    def head(self, prompt: str | None, task: str | None = None) -> list[int]:
        """`[bos] (task [sep]) prompt [sep]`: token ids of what the response follows (an empty
        prompt when None; on a chat run, an empty user turn)."""
        from .data.prompt_response import row_head

        task = self.check_task(task)
        task_ids = self._encode(task) if task else []
        return row_head(self.special.bos, int(self.special.sep), self.prompt_ids(prompt), task_ids)

    def tasks_for(self, task: str | Sequence[str | None] | None, count: int) -> list[str | None]:
        """One task per prompt: `task` for all of them, or a list with one per prompt."""
        if task is None or isinstance(task, str):
            return [task] * count
        tasks = list(task)
        if len(tasks) != count:
            raise ArgumentError(f"{len(tasks)} tasks for {count} prompts; give one {{task}} or one per prompt",
                                task="task")
        return tasks

    def split_head(self, head: Sequence[int]) -> tuple[str, str | None]:
        """(prompt text, task text or None) of a row's head (its first `prompt_len` ids): the inverse
        of `head`, up to the tokenizer's decoding."""
        ids = [int(t) for t in head]
        if ids and ids[0] == self.special.bos:
            ids = ids[1:]
        if ids and ids[-1] == self.special.sep:
            ids = ids[:-1]
        task = None
        if self.special.sep in ids:  # `task [sep] prompt`
            cut = ids.index(self.special.sep)
            task_ids, ids = ids[:cut], ids[cut + 1:]
            task = self.tokenizer.decode(task_ids, skip_special_tokens=True)
        if self.chat:  # the conversation as rendered, template markers kept: `head` takes it as is
            from .data.chat import RenderedPrompt, has_template

            prompt = RenderedPrompt(self.tokenizer.decode(ids, skip_special_tokens=not has_template(self.tokenizer)))
        else:
            prompt = self.tokenizer.decode(ids, skip_special_tokens=True)
        # A fixed task is put back by `head`: the prompt alone is what a caller passes.
        return prompt, None if self.fixed_task is not None else task


def split_prompts(layout: PromptLayout, split, n: int) -> list[tuple[str, str | None, list[int]]]:
    """(prompt, task or None, the row's ids from its response on) of `n` rows spread evenly over a
    split of prompt/response rows (`split.prompt_len`): what a model is asked and what it should say."""
    import numpy as np

    count = len(split)
    if count == 0 or n < 1:
        return []
    picks = np.unique(np.linspace(0, count - 1, min(n, count)).round().astype(int))
    out = []
    for i in picks.tolist():
        row = [int(t) for t in np.asarray(split.ids[i])]
        start = int(split.prompt_len[i])
        prompt, task = layout.split_head(row[:start])
        out.append((prompt, task, row[start:]))
    return out
