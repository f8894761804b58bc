"""Chat messages as prompt/response rows (`data.messages_column`).

A row may hold a conversation instead of a prompt and a response: a list of messages
`[{"role": "user", "content": ...}, {"role": "assistant", "content": ...}, ...]` (instruction
datasets; in a .csv/.tsv cell, the same list as JSON). `split_conversation` makes it a
prompt/response example:

- the response is the content of the last message, which must be an assistant turn; a row
  whose messages do not end with one (no assistant turn, or a user turn last) has nothing to
  learn and is skipped (the builder counts such rows and the training log says how many);
- the prompt is every turn before it, a `Conversation`: a str (its plain rendering, below, used
  to show, group and train a BPE on) that keeps its turns, so the tokenizer renders them.

How the prompt is rendered into token ids (`conversation_ids`), before the row's `[sep]`
(the layout is prompt_response.py's):

- a tokenizer with a chat template (`tokenizer.chat_template`, e.g. Qwen's or Llama's) renders
  the turns with `apply_chat_template(..., add_generation_prompt=True)`: the text ends where the
  assistant's answer starts, as at inference. Its markers (`<|im_start|>`, ...) are read as the
  special tokens they are, as Hugging Face does; a leading start token the template writes is
  dropped (the row has its own); the ids the methods rely on (pad, mask, sep) come out only as
  text: content that spells them cannot forge them.
- any other tokenizer (the project's byte-level BPE has no template) gets the plain rendering,
  one line `role: content` per turn, then `assistant:`:

      user: name[The Eagle] food[French]
      assistant:

The response is encoded as text (no special tokens) and ends with the tokenizer's end-of-text,
as every prompt/response row does (not the template's end-of-turn marker).

A run trained on conversations reads a plain prompt as one user turn (`as_conversation`), and
`RenderedPrompt` marks text that is already rendered (the head of a validation row, decoded),
which is encoded as is.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from dlms.errors import DataError

ASSISTANT = "assistant"
USER = "user"

Turn = tuple[str, str]  # (role, content)


def render_plain(turns: Sequence[Turn]) -> str:
    """`role: content` per turn, one per line, then `assistant:` (where the response starts)."""
    return "\n".join([*(f"{role}: {content}" for role, content in turns), f"{ASSISTANT}:"])


class Conversation(str):
    """The turns before a response. As a str it is their plain rendering (`render_plain`), so it
    can be shown, grouped and hashed like any prompt; `turns` keeps ((role, content), ...)."""

    turns: tuple[Turn, ...]

    def __new__(cls, turns: Sequence[Turn]) -> Conversation:
        turns = tuple((str(role), str(content)) for role, content in turns)
        text = super().__new__(cls, render_plain(turns))
        text.turns = turns
        return text

    def __getnewargs__(self) -> tuple[tuple[Turn, ...]]:  # copy and pickle rebuild from the turns
        return (self.turns,)

    def messages(self) -> list[dict[str, str]]:
        """The turns as chat messages, `[{"role": ..., "content": ...}, ...]`."""
        return [{"role": role, "content": content} for role, content in self.turns]


class RenderedPrompt(str):
    """A prompt already rendered as a conversation of the run (template or plain rendering),
    e.g. the decoded head of a validation row: its ids are the text's, never wrapped again."""


def _turns(messages: Any, where: str, column: str) -> list[Turn]:
    """((role, content), ...) of a row's messages; DataError for anything that is not a list of
    {"role": str, "content": str} (a str is read as JSON first: a .csv/.tsv cell)."""
    fix = f'every row needs a list of {{"role": ..., "content": ...}} messages in column \'{column}\''
    if isinstance(messages, str):
        try:
            messages = json.loads(messages)
        except json.JSONDecodeError:
            raise DataError(f"{where}: messages column '{column}' holds text that is not JSON; {fix}") from None
    if not isinstance(messages, (list, tuple)):
        got = "missing" if messages is None else f"a {type(messages).__name__}"
        raise DataError(f"{where}: messages column '{column}' is {got}; {fix}")
    turns = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise DataError(f"{where}: message {i} in column '{column}' is a {type(message).__name__}; {fix}")
        role, content = message.get("role"), message.get("content")
        if not isinstance(role, str) or not isinstance(content, str):
            bad = "role" if not isinstance(role, str) else "content"
            got = "missing" if message.get(bad) is None else f"a {type(message.get(bad)).__name__}"
            raise DataError(f"{where}: message {i} in column '{column}' has its {bad} {got}; every message needs a "
                            "string role and a string content (text only)")
        turns.append((role, content))
    return turns


def split_conversation(messages: Any, where: str, column: str) -> tuple[Conversation, str] | None:
    """(the turns before the last message, the last message's content) of a row's messages, or
    None when the row does not end with an assistant turn (the row is skipped)."""
    turns = _turns(messages, where, column)
    if not turns or turns[-1][0] != ASSISTANT:
        return None
    return Conversation(turns[:-1]), turns[-1][1]


def as_conversation(prompt: Any) -> Conversation | RenderedPrompt:
    """What a run trained on conversations makes of a prompt: a Conversation or RenderedPrompt
    as is, a list of messages as its turns, any other text as one user turn."""
    if isinstance(prompt, (Conversation, RenderedPrompt)):
        return prompt
    if isinstance(prompt, (list, tuple)):
        return Conversation(_turns(prompt, "the prompt", "messages"))
    return Conversation([(USER, "" if prompt is None else str(prompt))])


def has_template(tokenizer: Any) -> bool:
    """Whether the tokenizer renders conversations with its own chat template."""
    return bool(getattr(tokenizer, "chat_template", None))


def template_key(tokenizer: Any) -> str | None:
    """The chat template (what a cache key holds of it: it decides the rows' ids), or None."""
    template = getattr(tokenizer, "chat_template", None)
    return json.dumps(template, sort_keys=True) if template else None


def _reserved(tokenizer: Any) -> dict[int, str]:
    """{id: token} of the special tokens a rendered prompt may hold only as text: pad, mask and
    sep, unless the chat template itself writes the token."""
    template = str(getattr(tokenizer, "chat_template", None) or "")
    out = {}
    for name in ("pad_token", "mask_token", "sep_token"):
        token = getattr(tokenizer, name, None)
        if token and token not in template:
            out[int(tokenizer.convert_tokens_to_ids(token))] = token
    return out


def encode_rendered(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Token ids of rendered conversations [N][len_i]: plain text for a tokenizer without a
    template; with one, its markers read as special tokens, a leading start token dropped, and
    pad, mask or sep spelt in the content encoded as text."""
    from dlms.data.tokenizer import encode_texts

    if not has_template(tokenizer):
        return encode_texts(tokenizer, texts)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        old = backend.encode_special_tokens
        backend.encode_special_tokens = False  # the template's markers are special tokens
        try:
            encoded = [enc.ids for enc in backend.encode_batch(texts, add_special_tokens=False)]
        finally:
            backend.encode_special_tokens = old
    else:
        encoded = [tokenizer.encode(text, add_special_tokens=False) for text in texts]
    reserved, bos = _reserved(tokenizer), tokenizer.bos_token_id
    as_text = {i: encode_texts(tokenizer, [token])[0] for i, token in reserved.items()}
    out = []
    for ids in encoded:
        if ids and bos is not None and ids[0] == bos:  # the row's own [bos] comes first
            ids = ids[1:]
        out.append([t for i in ids for t in (as_text[i] if i in as_text else [i])])
    return out


def render_text(tokenizer: Any, conversation: Conversation) -> str:
    """The text of a conversation as the tokenizer renders it: its chat template with the
    generation prompt, or the plain rendering."""
    if not has_template(tokenizer):
        return str(conversation)
    try:
        return tokenizer.apply_chat_template(conversation.messages(), tokenize=False, add_generation_prompt=True)
    except Exception as exc:  # noqa: BLE001  (jinja raises its own types, e.g. for roles it refuses)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"the tokenizer's chat template cannot render a conversation with roles "
                        f"{[role for role, _ in conversation.turns]} ({first}); fix the messages' roles or give a "
                        "tokenizer whose template takes them (data.tokenizer)") from None


def conversation_ids(tokenizer: Any, prompts: Sequence[Conversation | RenderedPrompt]) -> list[list[int]]:
    """The prompt ids of each conversation [N][len_i] (see the module docstring)."""
    texts = [p if isinstance(p, RenderedPrompt) else render_text(tokenizer, p) for p in prompts]
    return encode_rendered(tokenizer, [str(t) for t in texts])
