"""Prompt/response rows: the layout of one example, shared by the data builder and sampling.

One example per row (the padded layout), its prompt first and its response after it:

    [bos] (task [sep]) prompt [sep] response [eos] [pad] ...
    |<------------ the head ------------>|<--- the response region --->|

- The head is everything the model is given: the start token, the task tokens with a separator
  when the row has a task (`data.task`, or the row's value of `data.task_column`), the prompt,
  and a separator. `prompt_len` is its length: the position where the response starts.
- The response region is everything after it, its end-of-text and padding included: a method
  trained on responses only noises and scores exactly these positions, so a model learns where a
  response stops (LLaDA's supervised fine-tuning counts its end-of-text padding the same way).
- The separator is a special token of its own (`<sep>`; a tokenizer that has a distinct
  `sep_token` keeps it), added to the tokenizer when prompt/response data is built: the end of
  the prompt is then marked whatever the prompt's last word is (an AR model could otherwise not
  tell a prompt that ends from one that goes on), and no text can spell it.
- Chat data (`data.messages_column`): the prompt is the conversation before the last assistant
  turn, rendered by the tokenizer's chat template (or a plain rendering), and the response is
  that turn's content (chat.py); rows that do not end with an assistant turn are skipped and
  counted (`meta["skipped"]`).
- A row longer than the data's `seq_len` is cut at the end of its response (it loses its
  end-of-text); a head that leaves no room for one response token drops its row. The builder
  counts both per split (`meta["splits"][split]["truncated"]` and `["dropped"]`) and
  `describe_cuts` turns the counts into the line a training run logs.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dlms.errors import DataError

SEP = "<sep>"


@dataclass(frozen=True)
class PromptColumns:
    """Where a row's prompt, response and task come from (the `data.*_column` keys and `data.task`);
    `messages`: a column of chat messages instead of the prompt and response columns (chat.py)."""

    prompt: str = "prompt"
    response: str = "response"
    task_column: str | None = None
    task: str | None = None  # one task text for every row
    messages: str | None = None

    def key_part(self) -> dict[str, Any]:
        """What the cache key holds of these options (the layout's version too: a new layout is a new entry)."""
        part = {"prompt": self.prompt, "response": self.response, "task_column": self.task_column,
                "task": self.task, "layout": 1}
        if self.messages is not None:  # only then: the keys of prompt/response columns stay as they were
            part.update(messages=self.messages, chat_rendering=1)
        return part


def ensure_sep_token(tokenizer: Any) -> Any:
    """Add `<sep>` as the tokenizer's `sep_token` unless it has one distinct from its pad, bos,
    eos and mask tokens (in place; returns the tokenizer). The new id is `len(tokenizer)` before."""
    taken = {tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.mask_token_id}
    if tokenizer.sep_token is None or tokenizer.sep_token_id in taken:
        tokenizer.add_special_tokens({"sep_token": SEP})
    return tokenizer


def sep_id(tokenizer: Any) -> int:
    """The separator's id; DataError for a tokenizer without one (data built as plain text)."""
    sep = getattr(tokenizer, "sep_token_id", None)
    if sep is None:
        raise DataError("the tokenizer has no separator token; build prompt/response data with it first "
                        "(data.format=prompt_response adds <sep>)")
    return int(sep)


def row_head(bos: int, sep: int, prompt: Sequence[int], task: Sequence[int] = ()) -> list[int]:
    """`[bos] (task [sep]) prompt [sep]`: the ids before the response; no task tokens, no task separator."""
    head = [bos]
    if task:
        head += [*task, sep]
    return head + [*prompt, sep]


def layout_row(head: Sequence[int], response: Sequence[int], eos: int, seq_len: int) -> tuple[list[int], bool] | None:
    """(head + response + [eos] cut to `seq_len`, whether it was cut), or None when the head
    leaves no room for a response token (the row is dropped)."""
    if len(head) >= seq_len:
        return None
    row = [*head, *response, eos]
    return row[:seq_len], len(row) > seq_len


def describe_cuts(stats: dict[str, dict[str, int]], seq_len: int, skipped: int = 0) -> str | None:
    """One line on the rows cut at the end of their response, the rows dropped and the chat rows
    `skipped` for want of a final assistant turn (None when there were none)."""
    parts = []
    if skipped:
        parts.append(f"{skipped} rows skipped: their messages do not end with an assistant turn (nothing to "
                     "learn)")
    cut = {s: v.get("truncated", 0) for s, v in stats.items()}
    dropped = {s: v.get("dropped", 0) for s, v in stats.items()}
    if any(cut.values()):
        where = ", ".join(f"{n} of {stats[s]['examples']} {s}" for s, n in cut.items() if n)
        parts.append(f"{where} rows cut at the end of their response to fit seq_len {seq_len} (they lose their "
                     "end-of-text)")
    if any(dropped.values()):
        where = ", ".join(f"{n} {s}" for s, n in dropped.items() if n)
        parts.append(f"{where} rows dropped: the prompt alone fills the row")
    if not parts:
        return None
    fix = " (raise data.seq_len or shorten the texts)" if any(cut.values()) or any(dropped.values()) else ""
    return "prompt/response data: " + "; ".join(parts) + fix


def encode_pairs(tokenizer: Any, examples: Sequence[dict[str, Any]],
                 fixed_task: str | None = None) -> list[tuple[list[int], list[int]]]:
    """(head ids, response ids) of prompt/response examples (`{"prompt", "response", "task"}`, see
    sources.py): the task is the example's own, else `fixed_task` (data.task), else none. A prompt
    that is a chat `Conversation` is rendered as chat.py says."""
    from dlms.data.chat import Conversation, conversation_ids
    from dlms.data.tokenizer import encode_texts

    chats = [i for i, ex in enumerate(examples) if isinstance(ex["prompt"], Conversation)]
    plain = [i for i, ex in enumerate(examples) if not isinstance(ex["prompt"], Conversation)]
    prompts: list[list[int]] = [[] for _ in examples]
    for rows, encode in ((plain, encode_texts), (chats, conversation_ids)):
        for i, ids in zip(rows, encode(tokenizer, [examples[i]["prompt"] for i in rows]) if rows else []):
            prompts[i] = ids
    responses = encode_texts(tokenizer, [ex["response"] for ex in examples])
    fixed = encode_texts(tokenizer, [fixed_task])[0] if fixed_task is not None else []
    tasks: list[list[int]] = [fixed] * len(examples)
    given = [i for i, ex in enumerate(examples) if ex.get("task") is not None]
    for i, tokens in zip(given, encode_texts(tokenizer, [examples[i]["task"] for i in given]) if given else []):
        tasks[i] = tokens
    bos, sep = tokenizer.bos_token_id, sep_id(tokenizer)
    return [(row_head(bos, sep, p, t), r) for p, r, t in zip(prompts, responses, tasks)]
