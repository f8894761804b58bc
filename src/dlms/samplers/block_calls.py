"""The network calls of one block of a masked sampler (`BlockCalls`): which rows the network
sees under guidance, the canvas cache's windows, a block-diffusion model's attention pattern,
and where a text ends (`draw_end`, text_end "drawn"). With `inside_the_text` and `forbid_ends`:
no end-of-text is drawn before a given word (an infilling template's). The samplers in
masked.py run their update rules on what these calls return; gaussian.py uses the two helpers.
"""
from __future__ import annotations

import torch

from .guidance import mix_guidance
from .unmasking import draw_text_end, first_end_probs

MEDIAN_LEFT = 0.5  # greedy drawn ends: the chance of going on that the median leaves


def inside_the_text(tokens: torch.Tensor, fixed: torch.Tensor, end_ids: tuple[int, ...]) -> torch.Tensor:
    """The free positions that a given word follows: bool [B, L], True at a free position p with
    a fixed token at some q > p that is not one of `end_ids` (end-of-text, padding). The text goes
    on past p, so p may hold neither an end nor a start token. tokens long [B, L], fixed bool [B, L]."""
    words = fixed & ~torch.isin(tokens, torch.tensor(end_ids, device=tokens.device))
    after = words.flip(-1).long().cumsum(-1).flip(-1) - words.long()  # given words strictly after p
    return ~fixed & (after > 0)


def forbid_ends(logits: torch.Tensor, inside: torch.Tensor, ids: tuple[int, ...],
                value: float = float("-inf")) -> torch.Tensor:
    """logits [..., V] with tokens `ids` set to `value` where `inside` (bool [...]) holds; the
    same tensor, untouched, where it holds nowhere (so ordinary canvases sample as before)."""
    if not bool(inside.any()):
        return logits
    columns = list(ids)
    logits[..., columns] = torch.where(inside[..., None], torch.full_like(logits[..., columns], value),
                                       logits[..., columns])
    return logits


class BlockCalls:
    """The network calls of one block for the rows still decoding: the canvas cache, guidance
    and a block-diffusion model's attention pattern are handled here. `inside` bool [b, L]: the
    free positions a given word follows (`inside_the_text`), where no end may be drawn."""

    def __init__(self, sampler, x: torch.Tensor, start: int, end: int, labels, prompt,
                 guidance_scale: float, cache, kv, clean_from: int | None = None,
                 inside: torch.Tensor | None = None, active: torch.Tensor | None = None):
        self.s, self.x, self.start, self.end = sampler, x, start, end
        self.active = torch.arange(x.shape[0], device=x.device) if active is None else active  # rows of the batch
        self.inside = inside
        self.labels, self.prompt, self.scale = labels, prompt, guidance_scale
        self.cache_mode, self.kv = cache, kv
        self.filled = False  # a bidirectional cache is filled by the block's first call
        self.memo = None  # the cached sampler's per-row predictions within this block
        # Block diffusion with its exact cache: the first position whose final (clean) keys and
        # values are not stored yet. The block's first call carries [clean_from, start) along, so
        # storing the finished blocks costs no call of its own.
        self.clean_from = start if clean_from is None else clean_from
        # text_end="drawn": where each row's text ends, drawn at the block's first call (long [b];
        # the canvas length where the text goes on past the block); None until drawn.
        self.text_end: torch.Tensor | None = None

    def rows(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, int]:
        """The rows the network sees: (x_t [r*b, L], labels, r) with r = 2 under guidance."""
        s = self.s
        if not s.guided:
            return x, self.labels, 1
        if self.labels is not None:
            null = torch.full_like(self.labels, s.model.null_class)
            return x.repeat(2, 1), torch.cat([self.labels, null]), 2
        return torch.cat([x, x.masked_fill(self.prompt, s.mask_id)]), None, 2

    def logits(self, x: torch.Tensor, select: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Logits of p(x0 | x_t) [M, V] float32 at `select` (bool [b, L], inside this block's
        reach), mask token excluded, guided when asked."""
        s = self.s
        rows, labels, reps = self.rows(x)
        window = (0, x.shape[1])
        extra = {}
        if self.kv is not None:
            block_causal = s.method.decoding_block is not None
            if block_causal or self.filled:
                window = (self.start, self.end if self.cache_mode == "dual" or block_causal else x.shape[1])
            self.filled = True
            if block_causal and self.clean_from < self.start:
                window = (self.clean_from, self.end)
                self.kv.visible_until = self.block_ends(self.clean_from, self.end, x.device)
                self.clean_from = self.start
            self.kv.window = window
            extra["cache"] = self.kv
        else:
            mask = s.method.attention_mask(x.shape[1], x.device)
            if mask is not None:
                extra["attn_mask"] = mask
        a, b = window
        time = t.expand(rows.shape[0]) if s.model.spec.time_conditioning else None
        out = s.model(rows[:, a:b], select=select[:, a:b].repeat(reps, 1), time=time, labels=labels, **extra).float()
        s.stats.network_calls += 1
        if self.kv is not None:
            self.kv.visible_until = None
        logits = mix_guidance(*out.chunk(2), self.scale) if reps == 2 else out
        logits[:, s.mask_id] = float("-inf")
        if self.inside is not None:  # after guidance: -inf minus -inf would be NaN
            special = s.method.special
            logits = forbid_ends(logits, self.inside[:, a:b][select[:, a:b]], (special.eos, special.pad, special.bos))
        return logits

    def draw_end(self, x: torch.Tensor, candidates: torch.Tensor, logits: torch.Tensor, temperature: float,
                 generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Decide where each row's text ends before any word of the block is chosen (text_end
        "drawn"), from this first call's end-of-text probabilities, and hold the block to it.

        x long [b, L], candidates bool [b, L], logits [M, V] at the candidates (filtered). The end
        falls at block position q with the model's probability of an end there given what is
        decoded (`end_probs`, `unmasking.draw_text_end`), or past the block. Then no end may be
        drawn before q (`inside`), q gets its end-of-text this step,
        and the positions after q are no longer candidates: the row ends once the text before q is
        written. -> (candidates, logits at them, forced end bool [b, L]).

        Greedy decoding (temperature 0) takes the median length instead of a draw: the end falls
        where the chance that the text has ended reaches one half, counting the chance of ending
        in the earlier blocks (`survived`: the chance of having gone on past them). A median
        taken afresh in each block would be the median given that the text went on, and ran long
        (E2E: 1.6x the references' length).

        Why: a rule that picks positions by confidence commits the sure words after a text's end
        before the uncertain end itself, and an end seen with words after it is unlikely; texts ran
        to twice the data's length on TinyStories (docs/generation-frontier-tinystories)."""
        special = self.s.method.special
        span = self.end_probs(x, candidates, logits, temperature)[:, self.start:self.end]
        quantile = None
        if temperature == 0:  # greedy: the median length, carried across blocks (see `survived`)
            survived = self.s.survived[self.active]
            quantile = (1.0 - MEDIAN_LEFT / survived).clamp(min=0.0)
        q = self.start + draw_text_end(span, generator, quantile=quantile)  # [b]; self.end: no end in this block
        if quantile is not None:  # the chance of going on past this block, for the rows that do
            self.s.survived[self.active] = survived * (1.0 - span.double().sum(-1).clamp(max=1.0))
        self.text_end = torch.where(q < self.end, q, torch.full_like(q, x.shape[1]))
        pos = torch.arange(x.shape[1], device=x.device)
        forced = candidates & (pos[None, :] == q[:, None])
        before = candidates & (pos[None, :] < q[:, None])
        self.inside = before if self.inside is None else self.inside | before
        logits = logits[before[candidates]]  # the candidates left to the rule: those before the end
        logits[:, [special.eos, special.pad, special.bos]] = float("-inf")
        return before, logits, forced

    def end_probs(self, x: torch.Tensor, candidates: torch.Tensor, logits: torch.Tensor,
                  temperature: float) -> torch.Tensor:
        """The probability that the text's end falls at each position, from this call: float [b, L],
        0 off the candidates and where no end may be drawn (`inside`). logits [M, V] at the
        candidates, filtered; at the sampling temperature, and for greedy decoding at temperature 1
        (`draw_end` then takes the median end). Not the likeliest token at each position: with the
        block still masked, padding is the likeliest token long before the text has ended with
        probability one half (every word shares the rest), and greedy responses on E2E ended at
        0.75x the references' length. Where the padding token is the end-of-text token, see
        `unmasking.first_end_probs`."""
        special = self.s.method.special
        probs = (logits.float() / (temperature if temperature > 0 else 1.0)).softmax(-1)
        end, pad = torch.zeros(x.shape, device=x.device), torch.zeros(x.shape, device=x.device)
        end[candidates], pad[candidates] = probs[:, special.eos], probs[:, special.pad]
        if self.inside is not None:
            end, pad = end.masked_fill(self.inside, 0.0), pad.masked_fill(self.inside, 0.0)
        span = slice(self.start, self.end)
        end[:, span] = first_end_probs(end[:, span], cumulative=special.pad == special.eos,
                                       pad_probs=pad[:, span])
        return end

    def past_end(self, candidates: torch.Tensor) -> torch.Tensor:
        """candidates bool [b, L] without the drawn end and what follows it, except in a row that
        has written everything before its end and still did not end (a given word after it keeps
        it open, `_end_rows`): there the rest is decoded as usual, so no row ever stalls."""
        if self.text_end is None:
            return candidates
        pos = torch.arange(candidates.shape[1], device=candidates.device)
        before = candidates & (pos[None, :] < self.text_end[:, None])
        stalled = ~before.any(-1) & candidates.any(-1)
        return torch.where(stalled[:, None], candidates, before)

    def block_ends(self, a: int, b: int, device: torch.device) -> torch.Tensor:
        """For positions a..b-1 of a block-causal model: the end of each one's block (what it may
        see up to), long [b - a]."""
        size = self.s.method.decoding_block
        pos = torch.arange(a, b, device=device)
        return ((pos // size + 1) * size).clamp(max=b)

    def write_clean(self, x: torch.Tensor) -> None:
        """Block diffusion with a cache, time-conditioned model: store the keys and values of the
        finished positions [clean_from, end), which every later block attends to, in a call of
        their own at time 0 (a model that does not see the time has them carried by the next
        block's first call instead)."""
        s = self.s
        rows, labels, _ = self.rows(x)
        self.kv.window = (self.clean_from, self.end)
        self.kv.visible_until = self.block_ends(self.clean_from, self.end, x.device)
        time = torch.zeros(rows.shape[0], device=x.device) if s.model.spec.time_conditioning else None
        s.model.hidden(rows[:, self.clean_from:self.end], time=time, labels=labels, cache=self.kv)
        self.kv.visible_until = None
        self.clean_from = self.end
        s.stats.network_calls += 1
