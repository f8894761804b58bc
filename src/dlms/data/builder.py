"""Turning raw text into cached, memory-mapped token arrays.

`DatasetBuilder(...).build_from_raw(path, vocab)` reads examples (see sources.py), splits them
into train/validation by document, gets a tokenizer (trains a byte-level BPE on the training
split, or loads one), tokenizes in chunks and writes the arrays into the cache (see cache.py).
A second call with the same inputs loads the cached arrays without tokenizing (or training).
`DatasetBuilder.build_from_raw(path, vocab, seq_len)` called on the class builds with the
default settings.

`seq_len=None` fits the row length to the data (see auto_length.py): the 99th percentile of the
training examples' token lengths (special tokens of the layout included), rounded up to a
multiple of 8, within [16, 512]; `meta["seq_len_auto"]` and `TokenizedDataset.seq_len_note`
say how it was chosen.

Row layouts, both int32 [N, seq_len]:

- "padded": one example per row, `[bos] + tokens + [eos] + [pad]*`, cut at seq_len (a cut row
  loses its eos; `meta["splits"][split]["truncated"]` counts them). Rows can carry labels.
- "packed": each document's tokens followed by `[eos]`, concatenated over the split and cut into
  seq_len blocks; the incomplete last block is dropped. No padding and no labels.

Prompt/response data (`prompt_column` set; padded layout only): each row is
`[bos] (task [sep]) prompt [sep] response [eos] [pad]*` (see prompt_response.py), and
`<split>_prompt_len.npy` (int32 [N]) holds where each row's response starts. A row too long is
cut at the end of its response (`truncated`), a row whose prompt alone fills it is dropped
(`dropped`); `TokenizedDataset.notes` says how many, for the training log. With `messages_column`
the prompts and responses come from chat messages (chat.py); rows that do not end with an
assistant turn are left out before the split (`meta["skipped"]` counts them).
"""

from __future__ import annotations

import functools
import inspect
import itertools
import types
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from dlms.checks import MIN_SEQ_LEN
from dlms.data import auto_length, cache
from dlms.data.prompt_response import PromptColumns, encode_pairs, ensure_sep_token
from dlms.data.chat import template_key
from dlms.data.sources import NO_ASSISTANT, content_fingerprint, parse_builtin, read_examples
from dlms.data.split_writer import SplitWriter
from dlms.data.tokenized import SPLITS, TokenizedDataset
from dlms.data.tokenizer import (
    encode_texts,
    ensure_special_tokens,
    load_tokenizer,
    special_ids,
    tokenizer_fingerprint,
    train_bpe_tokenizer,
)
from dlms.errors import ConfigError, DataError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

CHUNK_EXAMPLES = 4096  # examples tokenized per batch: bounds memory, keeps the Rust encoder busy


def split_mask(num_examples: int, val_fraction: float, split: str, seed: int) -> np.ndarray:
    """bool [num_examples]: True for validation examples.

    "tail": the last `val_fraction` of examples; "random": a seeded random subset of that size.
    At least one validation example when val_fraction > 0, and at least one training example.
    """
    n_val = 0 if val_fraction == 0 else max(1, int(round(num_examples * val_fraction)))
    if n_val >= num_examples:
        raise DataError(
            f"only {num_examples} example(s): too few to hold out a validation split of {val_fraction}; "
            "add data or lower val_fraction"
        )
    mask = np.zeros(num_examples, dtype=bool)
    if split == "tail":
        mask[num_examples - n_val :] = True
    else:
        mask[np.random.default_rng(seed).permutation(num_examples)[:n_val]] = True
    return mask


class class_or_instance_method:
    """A method that works on an instance as usual and on the class with default settings.

    `builder.method(...)` calls it on `builder`; `Class.method(...)` calls it on a fresh
    `Class()` (the constructor's defaults). Used for `DatasetBuilder.build_from_raw`.
    """

    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func
        functools.update_wrapper(self, func)

    def __get__(self, obj: Any, owner: type | None = None) -> Callable[..., Any]:
        if obj is not None:
            return types.MethodType(self.func, obj)
        func = self.func

        @functools.wraps(func)
        def with_default_settings(*args: Any, **kwargs: Any) -> Any:
            return func(owner(), *args, **kwargs)

        signature = inspect.signature(func)  # shown by help(): without `self`
        with_default_settings.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=list(signature.parameters.values())[1:])
        return with_default_settings


class DatasetBuilder:
    """Builds (or loads from the cache) a `TokenizedDataset` from raw text.

    Examples after `max_examples` (the first N are kept) are split by document before packing,
    so no validation text reaches the training rows or a trained tokenizer.

    seq_len: tokens per row; None fits it to the training data (see the module docstring and
    `TokenizedDataset.seq_len_note`). `build_from_raw` works on an instance and, with the
    default settings, on the class.

    prompt_column: reads prompt/response rows (from `prompt_column` and `response_column`) in the
    padded layout instead of texts; `task_column` (a column) or `task` (one text for every row)
    puts task tokens before the prompt. The tokenizer gets a separator token (`<sep>`) if it has none.
    messages_column: prompt/response rows from a column of chat messages instead (chat.py); not
    with prompt_column.
    """

    def __init__(
        self,
        seq_len: int | None = 128,
        layout: Literal["packed", "padded"] = "packed",
        val_fraction: float = 0.05,
        max_examples: int | None = None,
        text_column: str = "text",
        label_columns: Sequence[str] = (),
        split: Literal["tail", "random"] = "tail",
        seed: int = 0,
        builtin_examples: int = 20000,
        cache_dir: str | None = None,
        use_cache: bool = True,
        prompt_column: str | None = None,
        response_column: str = "response",
        task_column: str | None = None,
        task: str | None = None,
        messages_column: str | None = None,
    ) -> None:
        if layout not in ("packed", "padded"):
            raise ConfigError(f"unknown data layout '{layout}'; use 'packed' or 'padded'")
        if split not in ("tail", "random"):
            raise ConfigError(f"unknown split '{split}'; use 'tail' or 'random'")
        if not 0.0 <= float(val_fraction) < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if max_examples is not None and (not isinstance(max_examples, int) or max_examples < 1):
            raise ConfigError(f"max_examples must be a positive integer or None, got {max_examples!r}")
        if isinstance(label_columns, str):  # a bare string would be read as its characters
            label_columns = [label_columns]
        if label_columns and layout == "packed":
            raise ConfigError(
                "label columns need one example per row, but layout='packed' mixes documents; use layout='padded'"
            )
        self.prompts = None
        if prompt_column is not None and messages_column is not None:
            raise ConfigError("prompt_column and messages_column both say where the prompts come from "
                              "(data.prompt_column, data.messages_column); keep one")
        if prompt_column is not None or messages_column is not None:
            if layout != "padded":
                raise ConfigError("prompt/response rows need one example per row, but layout='packed' mixes "
                                  "documents; use layout='padded' (data.layout=padded)")
            if task is not None and task_column is not None:
                raise ConfigError("task and task_column both give the task (data.task, data.task_column); keep one")
            self.prompts = PromptColumns(prompt_column or "prompt", response_column, task_column, task, messages_column)
        elif task is not None or task_column is not None:
            raise ConfigError("task and task_column apply to prompt/response rows; set prompt_column "
                              "(data.format=prompt_response) or drop them")
        self.seq_len = self._check_seq_len(seq_len)
        self.layout = layout
        self.val_fraction = float(val_fraction)
        self.max_examples = max_examples
        self.text_column = text_column
        self.label_columns = list(label_columns)
        self.split = split
        self.seed = int(seed)
        self.builtin_examples = int(builtin_examples)
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else cache.default_cache_dir()
        self.use_cache = use_cache

    @staticmethod
    def _check_seq_len(seq_len: Any) -> int | None:
        """The row length, or None for "fit the data" (seq_len=None or "auto")."""
        if seq_len is None or seq_len == "auto":
            return None
        if not isinstance(seq_len, int) or isinstance(seq_len, bool) or seq_len < MIN_SEQ_LEN:
            raise ConfigError(f"seq_len must be an integer >= {MIN_SEQ_LEN}, or None to fit the data, got {seq_len!r}")
        return seq_len

    # ----------------------------------------------------------------------------------------

    @class_or_instance_method
    def build_from_raw(
        self,
        path: str,
        vocab: int | str | PreTrainedTokenizerBase,
        seq_len: int | Literal["auto"] | None = None,
    ) -> TokenizedDataset:
        """Build or load the dataset for `path`.

        vocab: an int trains a byte-level BPE of that size on the training split; a str is a
        tokenizer folder or Hub name; a tokenizer object is used as is (missing special tokens
        are added to it in place).
        seq_len: None uses the builder's `seq_len`; "auto" fits it to the data (as a builder
        made with seq_len=None does: see the module docstring).

        Called on the class, `DatasetBuilder.build_from_raw(path, vocab, seq_len)`, it builds with
        the default settings of `DatasetBuilder()`.
        """
        path = str(path)
        seq_len = self.seq_len if seq_len is None else self._check_seq_len(seq_len)
        fingerprint = content_fingerprint(path, self.builtin_examples, self.seed)
        tokenizer, tok_key = self._resolve_vocab(vocab, sep=self.prompts is not None)
        if self.prompts is not None and self.prompts.messages is not None and template_key(tokenizer):
            tok_key["chat_template"] = template_key(tokenizer)  # it decides the prompts' ids
        # An automatic length is keyed on its rule, not the number it gave: found without measuring.
        length_key = auto_length.cache_key_part() if seq_len is None else seq_len
        key = cache.cache_key({**self._key_parts(fingerprint), "seq_len": length_key, "layout": self.layout, **tok_key})
        entry = cache.entry_dir(self.cache_dir, "datasets", key)
        if self.use_cache and cache.is_complete(entry):
            ds = TokenizedDataset.load(entry, tokenizer)
            ds.from_cache = True
            return ds

        skipped: Counter = Counter()
        val_mask = split_mask(self._count(path, skipped), self.val_fraction, self.split, self.seed)
        if tokenizer is None:
            tokenizer = self._trained_tokenizer(path, int(vocab), fingerprint, val_mask)
            if self.prompts is not None:  # after the trained BPE's own ids: <sep> takes the next one
                ensure_sep_token(tokenizer)
        seq_len_auto = None
        if seq_len is None:
            seq_len_auto = self._fit_seq_len(path, tokenizer, val_mask)
            seq_len = seq_len_auto["chosen"]
        label_names = self._label_names(path, val_mask)
        with cache.staged_entry(entry, replace=not self.use_cache) as tmp:
            stats = self._write_arrays(tmp, path, tokenizer, val_mask, label_names, seq_len)
            tokenizer.save_pretrained(str(tmp / "tokenizer"))
            meta = {
                "format_version": cache.FORMAT_VERSION,
                "key": key,
                "source": path,
                "fingerprint": fingerprint,
                "layout": self.layout,
                "seq_len": seq_len,
                "seq_len_auto": seq_len_auto,  # None when seq_len was given
                "split": self.split,
                "val_fraction": self.val_fraction,
                "seed": self.seed,
                "max_examples": self.max_examples,
                "text_column": self.text_column,
                "label_columns": self.label_columns,
                "label_names": label_names,
                "prompt_response": None if self.prompts is None else self.prompts.key_part(),
                "skipped": skipped[NO_ASSISTANT],  # chat rows without a final assistant turn
                "tokenizer": {
                    "trained_bpe_vocab": vocab if isinstance(vocab, int) else None,
                    "name_or_path": None if isinstance(vocab, int) else getattr(tokenizer, "name_or_path", None),
                },
                "special_ids": special_ids(tokenizer),
                "splits": stats,
            }
            cache.write_meta(tmp, meta)  # written last: its presence marks a complete entry
        return TokenizedDataset.load(entry, tokenizer)

    # ----------------------------------------------------------------------------------------
    # Keys and tokenizers

    def _key_parts(self, fingerprint: str) -> dict[str, Any]:
        """Everything that decides which examples land in which split."""
        parts = {
            "fingerprint": fingerprint,
            "max_examples": self.max_examples,
            "val_fraction": self.val_fraction,
            "split": self.split,
            "seed": self.seed,
            "text_column": self.text_column,
            "label_columns": self.label_columns,
        }
        if self.prompts is not None:  # only then: the keys of text datasets stay as they were
            parts["prompt_response"] = self.prompts.key_part()
        return parts

    @staticmethod
    def _resolve_vocab(vocab: Any, sep: bool = False) -> tuple[Any, dict[str, Any]]:
        """(tokenizer or None if it must be trained, the tokenizer's part of the cache key).
        `sep`: give the tokenizer a separator token first (prompt/response data)."""
        if isinstance(vocab, bool):
            raise ConfigError("vocab must be an int (BPE size), a tokenizer name/path or a tokenizer, not a bool")
        if isinstance(vocab, int):
            # Keyed on the size alone: training is deterministic given the data and the split.
            return None, {"trained_bpe": vocab}
        if isinstance(vocab, (str, Path)):
            tokenizer = load_tokenizer(str(vocab))
        elif hasattr(vocab, "decode") and hasattr(vocab, "pad_token"):
            tokenizer = ensure_special_tokens(vocab)
        else:
            raise ConfigError(
                f"vocab must be an int, a tokenizer name/path or a tokenizer, got {type(vocab).__name__}"
            )
        if sep:  # before the fingerprint: a tokenizer that has <sep> already gives the same key
            ensure_sep_token(tokenizer)
        return tokenizer, {"tokenizer": tokenizer_fingerprint(tokenizer)}

    def _trained_tokenizer(self, path: str, vocab_size: int, fingerprint: str, val_mask: np.ndarray) -> Any:
        """Train a BPE on the training split, or reuse one trained on the same split before."""
        split_parts = {k: v for k, v in self._key_parts(fingerprint).items() if k != "label_columns"}
        key = cache.cache_key({"kind": "bpe", "vocab_size": vocab_size, **split_parts})
        entry = cache.entry_dir(self.cache_dir, "tokenizers", key)
        if self.use_cache and cache.is_complete(entry):
            return load_tokenizer(str(entry))
        texts = (text for ex in self._examples(path, val_mask, want="train", labels=False) for text in _texts(ex))
        with cache.staged_entry(entry, replace=not self.use_cache) as tmp:
            tokenizer = train_bpe_tokenizer(texts, vocab_size, out_dir=tmp)
            meta = {"format_version": cache.FORMAT_VERSION, "vocab_size": vocab_size, "source": path}
            cache.write_meta(tmp, meta)
        return tokenizer

    def _fit_seq_len(self, path: str, tokenizer: Any, val_mask: np.ndarray) -> dict[str, Any]:
        """Measure the first auto_length.SAMPLE training examples as rows (padded: bos + tokens +
        eos; packed: tokens + eos; prompt/response: the head + response + eos) and choose the row
        length: the record for meta["seq_len_auto"]."""
        extra = 2 if self.layout == "padded" else 1
        examples = itertools.islice(self._examples(path, val_mask, want="train", labels=False), auto_length.SAMPLE)
        lengths: list[int] = []
        while chunk := list(itertools.islice(examples, CHUNK_EXAMPLES)):
            if self.prompts is not None:
                lengths += [len(head) + len(response) + 1 for head, response in self._pairs(chunk, tokenizer)]
            else:
                lengths += [len(tokens) + extra for tokens in encode_texts(tokenizer, [ex["text"] for ex in chunk])]
        return auto_length.choose(lengths)

    def _pairs(self, chunk: list[dict[str, Any]], tokenizer: Any) -> list[tuple[list[int], list[int]]]:
        """(head ids, response ids) of prompt/response examples (see prompt_response.encode_pairs)."""
        return encode_pairs(tokenizer, chunk, self.prompts.task)

    # ----------------------------------------------------------------------------------------
    # Passes over the raw data

    def _read(self, path: str, labels: bool = True, skipped: Counter | None = None) -> Iterator[dict[str, Any]]:
        p = self.prompts
        chat = p is not None and p.messages is not None
        return read_examples(
            path,
            text_column=self.text_column,
            label_columns=self.label_columns if labels else (),
            max_examples=self.max_examples,
            builtin_examples=self.builtin_examples,
            seed=self.seed,
            prompt_column=None if p is None or chat else p.prompt,
            response_column="response" if p is None else p.response,
            task_column=None if p is None else p.task_column,
            messages_column=p.messages if chat else None,
            skipped=skipped,
        )

    def _count(self, path: str, skipped: Counter | None = None) -> int:
        """The examples a build splits; `skipped` counts the chat rows left out."""
        # Read with labels so a missing label column fails here, before any training.
        return sum(1 for _ in self._read(path, skipped=skipped))

    def split_examples(self, path: str, want: Literal["train", "val"]) -> list[dict[str, Any]]:
        """The raw examples (see sources.read_examples) of one split as a build splits them, in file order."""
        return list(self._examples(str(path), split_mask(self._count(str(path)), self.val_fraction, self.split,
                                                         self.seed), want))

    def _examples(
        self, path: str, val_mask: np.ndarray, want: str, labels: bool = True
    ) -> Iterator[dict[str, Any]]:
        """The examples of one split, in file order."""
        for i, ex in enumerate(self._read(path, labels=labels)):
            if val_mask[i] == (want == "val"):
                yield ex

    def _label_names(self, path: str, val_mask: np.ndarray) -> dict[str, list[str]]:
        """Per column, the sorted label values seen in the training split (builtin: LABELS order)."""
        if not self.label_columns:
            return {}
        if parse_builtin(path, self.builtin_examples) is not None:
            from dlms.data.corpus import LABELS

            return {col: list(LABELS[col]) for col in self.label_columns}
        return self._seen_labels(path, val_mask)

    def _seen_labels(self, path: str, val_mask: np.ndarray) -> dict[str, list[str]]:
        seen: dict[str, set[str]] = {col: set() for col in self.label_columns}
        for ex in self._examples(path, val_mask, want="train"):
            for col, value in ex["labels"].items():
                if value is not None:
                    seen[col].add(value)
        return {col: sorted(values) for col, values in seen.items()}

    def _write_arrays(
        self,
        out: Path,
        path: str,
        tokenizer: Any,
        val_mask: np.ndarray,
        label_names: dict[str, list[str]],
        seq_len: int,
    ) -> dict[str, dict[str, int]]:
        """Tokenize every example once, streaming rows into `<split>_ids.npy` (+ labels)."""
        ids = special_ids(tokenizer)
        if self.layout == "padded" and ids["bos"] is None:
            raise DataError("the tokenizer has no bos token; pass a tokenizer with one (or an int vocab)")
        label_maps = {c: {v: i for i, v in enumerate(label_names.get(c, []))} for c in self.label_columns}
        prompted = self.prompts is not None
        writers = {s: SplitWriter(out, s, self.layout, seq_len, ids, label_maps, prompted) for s in SPLITS}
        try:
            chunk: list[tuple[str, dict[str, Any]]] = []
            for i, ex in enumerate(self._read(path)):
                if i >= len(val_mask):
                    raise DataError(f"'{path}' changed while the dataset was being built; build again")
                chunk.append(("val" if val_mask[i] else "train", ex))
                if len(chunk) == CHUNK_EXAMPLES:
                    self._tokenize_chunk(chunk, tokenizer, writers)
                    chunk = []
            self._tokenize_chunk(chunk, tokenizer, writers)
        finally:
            stats = {s: w.close() for s, w in writers.items()}
        self._check_nonempty(stats, seq_len)
        return stats

    def _tokenize_chunk(
        self, chunk: list[tuple[str, dict[str, Any]]], tokenizer: Any, writers: dict[str, SplitWriter]
    ) -> None:
        if not chunk:
            return
        if self.prompts is not None:
            for (name, ex), (head, response) in zip(chunk, self._pairs([ex for _, ex in chunk], tokenizer)):
                writers[name].add_pair(head, response, ex["labels"])
            return
        token_lists = encode_texts(tokenizer, [ex["text"] for _, ex in chunk])
        for (name, ex), tokens in zip(chunk, token_lists):
            writers[name].add(tokens, ex["labels"])

    def _check_nonempty(self, stats: dict[str, dict[str, int]], seq_len: int) -> None:
        for s in SPLITS:
            if stats[s]["rows"] == 0 and stats[s].get("dropped"):
                raise DataError(
                    f"every one of the {stats[s]['examples']} {s} example(s) has a prompt that alone fills the "
                    f"{seq_len}-token row, leaving no room for its response; raise seq_len (data.seq_len) or "
                    "shorten the prompts"
                )
            if stats[s]["rows"] == 0 and (s == "train" or self.val_fraction > 0):
                raise DataError(
                    f"the {s} split has {stats[s]['examples']} example(s) but no complete {seq_len}-token row; "
                    "lower seq_len, use layout='padded', raise val_fraction or add data"
                )


def _texts(example: dict[str, Any]) -> list[str]:
    """The texts of an example a tokenizer is trained on: its text, or its prompt, response and task."""
    if "text" in example:
        return [example["text"]]
    return [t for t in (example.get("task"), example["prompt"], example["response"]) if t]
