"""Infilling templates: a text with blanks that a bidirectional model fills.

    "the chef ___ the soup , and it was ___:2 ."

- A blank is three or more underscores. `___` holds `blank_tokens` tokens (default
  DEFAULT_BLANK_TOKENS); `___:N` exactly N tokens (N >= 1). A template needs at least one blank.
- The text between blanks is tokenized segment by segment, so the given words keep exactly
  their tokens. Whitespace just before a blank goes with the blank: byte-level BPE (and
  sentencepiece) tokenizers attach a space to the word after it (`Ġcooked`), so "the chef ___"
  gives the tokens of "the chef" and the blank's first token brings its own space, as in the
  data (a lone space token would be off the data). Whitespace at either end of the text is dropped.
- The canvas ([N, W], W the model's training length): the start tokens, the template, then one
  end-of-text (where there is room: a template exactly W long has none, like a training row cut
  at its length); after it, padding (padded data, where a text ends that way) or free positions
  (packed data: the model writes the next document, which decoding drops). Everything is held
  fixed except the blanks and that packed tail.

What the samplers then guarantee (samplers/masked.py, `inside_the_text`): a free position with a
given word after it never gets an end-of-text, padding or start token, so a text never ends
inside its template and every blank holds text.

The class of a fill (a masked model trained with labels, no label given): the given words tell
it, so each sample's class is drawn from the model's own posterior p(class | given words)
(`class_log_likelihoods`, `draw_classes`, uniform prior) instead of the null class. The null
class is trained only on the dropped labels (train.cond_drop_prob, 0.1 for the demo), and with
it the demo's masked model read the topic of the given words poorly: on held-out texts of the
built-in corpus 0.63 of its fills were grammatical, nearly all failures a word of another topic
or sentiment than the rest of the text; with the drawn class 0.95, as with the data's own label
(0.94; bench/infill_quality.py, README).
"""
from __future__ import annotations

import re
from typing import Callable

import torch

from .checks import check_int
from .errors import ArgumentError, literal

# A plain `___` is one token: on the built-in corpus (a word is one token there) one-token blanks
# came out grammatical far more often than two-token ones (bench/infill_quality.py, README).
DEFAULT_BLANK_TOKENS = 1
# The given words are dealt into this many groups, each hidden in turn, to score the classes: one
# forward of groups x classes rows. On the built-in corpus 2, 4 and 8 groups, and one word per
# group, picked the data's label equally often (0.94 of templates with one or two blanks).
CLASS_GROUPS = 4
# Rows per forward when scoring classes (the rows are groups x classes; this bounds the memory).
CLASS_BATCH = 64
# Three or more underscores, then optionally `:N`; the colon's tail is checked separately so that
# `___:x` is an error, not text.
_BLANK = re.compile(r"_{3,}(?::(\S*?)(?=[\s.,;!?]|$))?")

Piece = str | int  # given text, or a blank of that many tokens


def parse_template(text: str, blank_tokens: int | None = None) -> list[Piece]:
    """The template's pieces in order: given text (str, never empty) and blanks (int, their
    token counts). `blank_tokens`: the length of a plain `___` (None: DEFAULT_BLANK_TOKENS).
    Raises ArgumentError (naming `text` / `blank_tokens`) for a template without a blank or a
    bad `___:N`."""
    if not isinstance(text, str):
        raise ArgumentError("{text} must be a string with blanks `___`, got " + literal(type(text).__name__),
                            text="text")
    check_int("blank_tokens", blank_tokens, 1)
    default = DEFAULT_BLANK_TOKENS if blank_tokens is None else blank_tokens
    pieces: list[Piece] = []
    at = 0
    text = text.strip()
    for match in _BLANK.finditer(text):
        pieces.append(text[at:match.start()])
        pieces.append(default if match.group(1) is None else _blank_length(match.group(0)))
        at = match.end()
    pieces.append(text[at:])
    if not any(isinstance(p, int) for p in pieces):
        raise ArgumentError("{text} needs at least one blank `___` (or `___:N` for exactly N tokens) for the model "
                            "to fill; add one, or give the text as a prompt to continue it", text="text")
    # Whitespace before a blank goes with the blank (see the module's docstring).
    out: list[Piece] = []
    for i, piece in enumerate(pieces):
        if isinstance(piece, str):
            if i + 1 < len(pieces):
                piece = piece.rstrip()
            if piece:
                out.append(piece)
        else:
            out.append(piece)
    return out


def _blank_length(blank: str) -> int:
    """N of a `___:N` blank (N a whole number >= 1), else ArgumentError."""
    value = blank.split(":", 1)[1]
    if not value.isdigit() or int(value) < 1:
        raise ArgumentError("{text} has the blank " + literal(f"`{blank}`") + ": after `___:` comes a number of "
                            "tokens, at least 1 (e.g. `___:2`); fix it, or put a space between the blank and the colon",
                            text="text")
    return int(value)


def template_ids(pieces: list[Piece], encode: Callable[[str], list[int]], mask_id: int,
                 special_ids: tuple[int, ...] = ()) -> tuple[list[int], list[bool]]:
    """The template as tokens: (ids [T] with `mask_id` at the blanks, given [T]: True at the
    given words' tokens). `encode(text)` tokenizes one segment without special tokens; a segment
    that encodes to a special token (`special_ids`, e.g. the text "<eos>") is an ArgumentError."""
    ids: list[int] = []
    given: list[bool] = []
    for piece in pieces:
        if isinstance(piece, int):
            ids += [mask_id] * piece
            given += [False] * piece
            continue
        tokens = encode(piece)
        if any(t in special_ids for t in tokens):
            raise ArgumentError("{text} holds a special token in " + literal(repr(piece)) + " (end-of-text, padding, "
                                "start or mask): the model writes those itself; remove it", text="text")
        ids += tokens
        given += [True] * len(tokens)
    return ids, given


def infill_canvas(start: list[int], ids: list[int], given: list[bool], width: int, *, eos: int, pad: int,
                  mask_id: int, padded: bool, num_samples: int,
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The starting state of an infill: (canvas long [N, W], fixed bool [N, W], given bool [N, W]).

    canvas = start + template (`ids` [T], mask at the blanks) + eos + (pad ... if `padded`,
    else mask ...), W = `width`; fixed everywhere but the blanks and a packed tail; `given` marks
    the template's given words, what prompt guidance hides (not the start tokens, nor the end).
    A template longer than W with its start tokens is an ArgumentError."""
    head = len(start) + len(ids)
    if head > width:
        raise ArgumentError(f"the template is {head} tokens with the start token, more than the model's {width} "
                            "(its training length); shorten {text} or its blanks ({blank_tokens}, `___:N`)",
                            text="text", blank_tokens="blank_tokens")
    row = torch.full((width,), mask_id, dtype=torch.long)
    fixed = torch.zeros(width, dtype=torch.bool)
    row[:head] = torch.tensor(start + ids, dtype=torch.long)
    fixed[:head] = torch.tensor([True] * len(start) + given)
    if head < width:  # the text ends right after the template
        row[head] = eos
        fixed[head] = True
        if padded:
            row[head + 1:] = pad
            fixed[head + 1:] = True
    marked = torch.zeros(width, dtype=torch.bool)
    marked[len(start):head] = torch.tensor(given, dtype=torch.bool)
    canvas, fixed, marked = (t.to(device)[None].repeat(num_samples, 1) for t in (row, fixed, marked))
    return canvas, fixed, marked


@torch.no_grad()
def class_log_likelihoods(method, model, canvas: torch.Tensor, given: torch.Tensor, num_classes: int,
                          groups: int = CLASS_GROUPS) -> torch.Tensor:
    """log p(given words | class) up to one constant, for every class: float [num_classes].

    A grouped pseudo-likelihood: the given positions (`given` bool [W]) of the infill canvas
    (`canvas` long [W], its blanks masked) are dealt round robin into `groups` sets (neighbours
    apart); each set is hidden in turn and the masked model (`method.masked_log_probs` on `model`)
    scores its words from the rest, under each class. The time the network is told (if it is
    time-conditioned) is the share of the row that is masked. No given word: all zeros."""
    positions = given.nonzero()[:, 0]
    if positions.numel() == 0:
        return torch.zeros(num_classes, device=canvas.device)
    k = max(1, min(groups, positions.numel()))
    hide = torch.zeros(k, canvas.numel(), dtype=torch.bool, device=canvas.device)
    hide[torch.arange(positions.numel(), device=canvas.device) % k, positions] = True
    clean = canvas.expand(num_classes * k, -1)
    hidden = hide.repeat(num_classes, 1)
    xt = clean.masked_fill(hidden, method.special.mask)
    labels = torch.arange(num_classes, device=canvas.device).repeat_interleave(k)
    scores = torch.zeros(num_classes * k, device=canvas.device)
    for a in range(0, xt.shape[0], CLASS_BATCH):
        rows = slice(a, a + CLASS_BATCH)
        t = (xt[rows] == method.special.mask).float().mean(-1)
        logp = method.masked_log_probs(model, xt[rows], hidden[rows], t, labels[rows])  # [M, V]
        picked = logp.gather(-1, clean[rows][hidden[rows]][:, None])[:, 0]
        scores[rows] = scores[rows].index_add(0, hidden[rows].nonzero()[:, 0], picked.float())
    return scores.view(num_classes, k).sum(-1)


def draw_classes(scores: torch.Tensor, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """One class per sample drawn from the posterior softmax(`scores`) (float [C], log
    likelihoods under a uniform prior): long [num_samples]. A template that fits several classes
    gets fills of several; one that fits one class, that class."""
    return torch.multinomial(scores.float().softmax(-1), num_samples, replacement=True, generator=generator)
