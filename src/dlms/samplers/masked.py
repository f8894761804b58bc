"""Samplers for masked diffusion: ancestral, cached ancestral, confidence and threshold.

Every sampler starts from a canvas [B, L] whose free positions hold the mask token, never
changes the positions held fixed (a prompt, or any given tokens), and returns tokens [B, L].
The update rules themselves are plain functions in unmasking.py; this file runs them.

Options every masked sampler shares:
- `block_size`: semi-autoregressive decoding (LLaDA): the canvas is cut into blocks of this
  many positions (from position 0), decoded left to right; inside a block the sampler's rule
  applies, later blocks stay masked. None: the sampler's default (ancestral and cached: the
  whole canvas; confidence and threshold: 8; a block-diffusion model: its trained block size,
  the only one it accepts).
- `cache` (built-in transformer only): "none" calls the network on the whole canvas each step;
  "prefix" (Fast-dLLM) keeps the keys and values of the positions before the block from one
  full forward per block and recomputes the block and everything after it; "dual" also keeps
  those after the block and recomputes only the block. Both are approximations for an ordinary
  bidirectional model (what lies outside the block is a block old) and exact for a
  block-diffusion model, which never looks ahead.
- End of text: after each block, a row whose decoded text holds an end-of-text (or padding)
  token ends there: that token becomes end-of-text, everything after it padding, and the row
  leaves the batch. So a text's length is where the model ended it, never which padding happened
  to be committed first, and a batch stops early when every row has ended.
- Where a text ends under a confidence rule (confidence, threshold; option `text_end`). With
  "frontier" an end is written only when the rule picks it at the row's first masked position (an
  end proposed further on is never committed: the far padding, the surest prediction of a padded
  model, would otherwise come first and leave an empty text). That is honest for a model trained
  on padded rows, which predicts padding after a likely end, so no word is committed there; but
  after a packed text's end comes the next text, whose sure words the rule commits before the
  uncertain end, and an end seen with words after it is unlikely: texts ran to twice the data's
  length on TinyStories. With "drawn" (the samplers' default) the block's first call decides where
  the text ends, before any of the block's words: at position q with the model's probability of
  an end there given what is decoded, or past the block (`BlockCalls.draw_end`); the block's words
  then fill the text up to q. DiffusionLM's "auto" picks frontier for padded runs ranked by the
  drawn token's probability (on the built-in corpus and Yelp sentences it slipped less there) and
  drawn otherwise: a rule that ranks by the distribution alone (margin, entropy) commits whatever
  word was drawn at a sure padding position, so its padded texts ran long at the frontier too.
- A text never ends inside its template: a free position with a fixed token after it that is not
  an end (an infilling template's given words, `inside_the_text`) never gets an end-of-text,
  padding or start token; every sampler draws from logits with those ruled out there
  (`BlockCalls.logits`). A canvas with nothing but ends fixed after its free positions (a prompt,
  then the text, then held padding) samples exactly as without the rule.

Classifier-free guidance (`guidance_scale` != 1) contrasts the conditional prediction with an
unconditional one: with `labels`, the same input under the null class; without labels, the
input with the prompt's positions (`prompt`, bool [B, L]; default every fixed position) masked,
as LLaDA guides on a prompt.

After `sample`, `stats` holds the steps run (callbacks made) and the network calls. With a
callback, `confidence` (float [B, L], NaN where none) holds, when the callback runs, each
committed token's confidence at the step that committed it (the probability of the drawn token
for ancestral sampling, the rule's score for confidence and threshold), for a live view.
"""
from __future__ import annotations

import math
from typing import Callable, Literal, NamedTuple, Optional

import torch

from ..errors import ArgumentError
from .block_calls import BlockCalls, inside_the_text
from .common import Sampler, SamplerStats, check_canvas, filter_logits, sample_categorical
from .randomness import Generators, at, rows_of
from .unmasking import (CONFIDENCE_KINDS, ConfidenceKind, ancestral_reveal, commit_above_threshold,
                        commit_by_factor, commit_most_confident, commit_random, confidence_scores, even_quota,
                        ends_wait_for_the_text)

# callback(step, num_steps, x_t [B, L]) is called after every step, e.g. to show the denoising.
StepCallback = Optional[Callable[[int, int, torch.Tensor], None]]
CacheMode = Literal["none", "prefix", "dual"]
CACHE_MODES = ("none", "prefix", "dual")
REMASKING = ("low_confidence", "random")
TextEnd = Literal["drawn", "frontier"]
TEXT_ENDS = ("drawn", "frontier")


class Proposal(NamedTuple):
    """What one call proposes to a confidence rule, for a block's rows x [b, L]: the positions
    left to the rule (`candidates`, bool [b, L]), their filtered logits [M, V] and drawn tokens
    [M], `x` with those tokens written (`tokens` [b, L]), the positions the rule may commit
    (`allowed` bool [b, L]: an end of text only where everything before it is written, see
    unmasking.ends_wait_for_the_text), and the end-of-text this step must write (`forced` bool
    [b, L], or None)."""

    candidates: torch.Tensor
    logits: torch.Tensor
    forced: Optional[torch.Tensor]
    proposal: torch.Tensor
    tokens: torch.Tensor
    allowed: torch.Tensor


class _MaskedSamplerBase(Sampler):
    method_names = ("masked", "block")
    # The sampling options `sample` takes (DiffusionLM passes exactly these; any other is an error).
    options: tuple[str, ...] = ("num_steps", "temperature", "top_k", "top_p", "guidance_scale", "block_size", "cache")
    prompt_guidance = True  # without labels, guidance contrasts the prompt with the prompt masked (`prompt`)
    default_block_size: int | None = None  # None: the whole canvas

    def __init__(self, method, model):
        super().__init__(method, model)  # `confidence`: see the module notes
        self.mask_id = method.special.mask
        self.guided = False  # set by `decode` for the batch at hand
        self._scores: torch.Tensor | None = None  # the last step's scores [b, L], when tracked

    # ------------------------------------------------------------------ checks
    def block_length(self, block_size: int | None, length: int) -> int:
        trained = self.method.decoding_block
        if trained is not None:
            if block_size is not None and block_size != trained:
                raise ArgumentError(f"{{block_size}} {block_size}: this block-diffusion model decodes blocks of its "
                                    f"trained size {trained} only; drop {{block_size}} or pass {trained}",
                                    block_size="block_size")
            return trained
        size = self.default_block_size if block_size is None else block_size
        if size is not None and size < 1:
            raise ValueError(f"block_size must be >= 1, got {size}")
        return length if size is None else min(size, length)

    def new_cache(self, cache: str, batch: int, length: int, device: torch.device):
        if cache not in CACHE_MODES:
            raise ValueError(f"unknown cache '{cache}'; use one of: {', '.join(CACHE_MODES)}")
        if cache == "none":
            return None
        if not getattr(self.model, "supports_canvas_cache", False):
            raise ArgumentError(f"{{cache}} {cache} needs the built-in transformer backbone; use {{cache}} none with "
                                "this one (block decoding works without a cache)", cache="cache")
        param = next(self.model.parameters())
        dtype = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else param.dtype
        return self.model.new_canvas_cache(batch, length, device, dtype, see_ahead=self.method.decoding_block is None)

    # ------------------------------------------------------------------ the loop
    def decode(self, canvas: torch.Tensor, fixed: torch.Tensor | None, *, labels, guidance_scale: float,
               block_size: int | None, cache: str, generator, callback: StepCallback, prompt,
               steps_in_block: Callable[[int, int], int], step) -> torch.Tensor:
        """Decode block by block. `steps_in_block(free, blocks)` plans a block's steps from its
        largest free count and the number of blocks to decode; `step(block, x, candidates, i,
        steps, generator)` -> (commit bool [b, L], tokens long [b, L]) is the sampler's rule."""
        fixed = check_canvas(canvas, fixed)
        prompt = fixed if prompt is None else prompt
        x = torch.where(fixed, canvas, torch.full_like(canvas, self.mask_id))
        inside = inside_the_text(x, fixed, (self.method.special.eos, self.method.special.pad))
        batch, length = x.shape
        size = self.block_length(block_size, length)
        self.stats = SamplerStats()
        self.confidence = torch.full(x.shape, float("nan"), device=x.device) if callback else None
        spans = [(a, min(a + size, length)) for a in range(0, length, size)]
        todo = [(a, b) for a, b in spans if bool((~fixed[:, a:b]).any())]
        plans = {span: steps_in_block(int((~fixed[:, span[0]:span[1]]).sum(-1).max()), len(todo)) for span in todo}
        total = sum(plans.values())
        active = torch.arange(batch, device=x.device)
        # Greedy drawn ends: each row's chance of going on past the blocks decoded so far.
        self.survived = torch.ones(batch, dtype=torch.float64, device=x.device)
        exact = self.method.decoding_block is not None  # block diffusion: one cache, exact, kept across blocks
        # Guided: against the null class (labels), else against the prompt masked; decided once for
        # the whole batch, so that every block and the cache agree on the rows the network sees.
        self.guided = guidance_scale != 1.0 and (labels is not None or bool(prompt.any()))
        reps = 2 if self.guided else 1
        kv = self.new_cache(cache, batch * reps, length, x.device) if exact else None
        # The exact cache stores a finished block within the next block's first call, unless the
        # model sees the time (finished tokens are at time 0, the block's at t): then in a call of its own.
        carried = exact and kv is not None and not self.model.spec.time_conditioning
        clean_from = 0
        for a, b in spans:
            if active.numel() == 0:
                break
            if (a, b) in plans:
                if not exact:  # a bidirectional model's cache is refilled for every block
                    kv = self.new_cache(cache, active.numel() * reps, length, x.device)
                block = self._decode_block(x, fixed, active, a, b, plans[(a, b)], total, labels, prompt, guidance_scale,
                                           cache, kv, generator, callback, step, clean_from, inside)
            else:
                block = BlockCalls(self, x[active], a, b, None if labels is None else labels[active], prompt[active],
                               guidance_scale, cache, kv, clean_from, inside[active], active)
            if exact and kv is not None:
                if not carried and b < length:  # nothing attends to the last block
                    block.write_clean(x[active])
                clean_from = block.clean_from
            ended = self._end_rows(x, fixed, active)
            if bool(ended.any()):
                keep = ~ended
                if exact and kv is not None:
                    kv.keep_rows(torch.cat([keep.nonzero()[:, 0] + k * active.numel() for k in range(reps)]))
                active = active[keep]
        return x

    def _decode_block(self, x, fixed, active, a, b, steps, total, labels, prompt, guidance_scale, cache, kv,
                      generator, callback, step, clean_from: int, inside: torch.Tensor) -> BlockCalls:
        """Run the rule on positions [a, b) of the active rows until none is masked (in place)."""
        block = BlockCalls(self, x[active], a, b, None if labels is None else labels[active], prompt[active],
                       guidance_scale, cache, kv, clean_from, inside[active], active)
        in_block = torch.zeros(x.shape[1], dtype=torch.bool, device=x.device)
        in_block[a:b] = True
        i = 0
        while True:  # the plan's `steps`, or a few more when a rule holds positions back
            rows = x[active]
            candidates = (rows == self.mask_id) & in_block
            if not candidates.any():
                break
            commit, tokens = step(block, rows, candidates, min(i, steps - 1), steps, rows_of(generator, active))
            x[active] = torch.where(commit, tokens, rows)
            if self.confidence is not None and self._scores is not None:
                shown = self._scores.float().masked_fill(~torch.isfinite(self._scores), float("nan"))
                self.confidence[active] = torch.where(commit, shown, self.confidence[active])
            self._scores = None
            self._end_rows(x, fixed, active)  # a row that ended needs no more steps
            i += 1
            self.stats.steps += 1
            if callback:
                callback(self.stats.steps, total, x)
        return block

    def _end_rows(self, x: torch.Tensor, fixed: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        """Rows (of `active`) with a generated end-of-text or padding token at a position p such
        that everything before p is decoded and nothing after p is fixed: they end at p (in
        place: p becomes end-of-text, what follows padding). -> bool [len(active)]."""
        special = self.method.special
        rows, fix = x[active], fixed[active]
        decoded_before = torch.cat([torch.ones_like(rows[:, :1], dtype=torch.bool),
                                    (rows != self.mask_id)[:, :-1].cumprod(-1).bool()], dim=1)
        end = ((rows == special.eos) | (rows == special.pad)) & ~fix & decoded_before
        has_end = end.any(-1)
        first = torch.where(has_end, end.float().argmax(-1), torch.full_like(has_end, x.shape[1], dtype=torch.long))
        pos = torch.arange(x.shape[1], device=x.device)
        # A fixed token after the end keeps the row open (an infilling template), unless it is an
        # end itself (a canvas whose tail is held as padding).
        fixed_after = (fix & (pos[None, :] > first[:, None]) & (rows != special.pad) & (rows != special.eos)).any(-1)
        ended = has_end & ~fixed_after
        if ended.any():
            tail = pos[None, :] > first[:, None]
            rows = torch.where(ended[:, None] & tail, torch.full_like(rows, special.pad), rows)
            rows = torch.where(ended[:, None] & (pos[None, :] == first[:, None]), torch.full_like(rows, special.eos), rows)
            x[active] = rows
        return ended

    def propose(self, block: BlockCalls, x: torch.Tensor, candidates: torch.Tensor, t: torch.Tensor, top_k: int,
                top_p: float, temperature: float, text_end: str, generator) -> Proposal:
        """One call for a confidence rule and the tokens it proposes (see `Proposal`). With
        `text_end` "drawn" the block's first call also decides where the text ends
        (`BlockCalls.draw_end`)."""
        candidates = block.past_end(candidates)
        logits = filter_logits(block.logits(x, candidates, t), top_k, top_p)
        forced = None
        if text_end == "drawn" and block.text_end is None:
            candidates, logits, forced = block.draw_end(x, candidates, logits, temperature, generator)
        proposal = sample_categorical(logits, temperature, at(generator, candidates))  # [M]
        tokens = x.clone()
        tokens[candidates] = proposal
        special = self.method.special
        allowed = ends_wait_for_the_text(x, candidates, tokens, self.mask_id, (special.eos, special.pad))
        return Proposal(candidates, logits, forced, proposal, tokens, allowed)

    def scored(self, x: torch.Tensor, draft: Proposal, confidence: ConfidenceKind) -> torch.Tensor:
        """Each candidate's confidence in its proposed token, float [b, L] (-inf elsewhere); kept as
        the step's scores for a watching callback."""
        scores = torch.full(x.shape, float("-inf"), device=x.device)
        scores[draft.candidates] = confidence_scores(draft.logits, draft.proposal, confidence)
        self._scores = scores
        return scores

    def with_ends(self, commit: torch.Tensor, tokens: torch.Tensor, forced: torch.Tensor | None):
        """(commit, tokens) with the drawn end-of-text written where `forced` (bool [b, L]) holds."""
        if forced is None:
            return commit, tokens
        return commit | forced, tokens.masked_fill(forced, self.method.special.eos)

    @staticmethod
    def times(i: int, steps: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(t, s) of step i of `steps`: the block's grid runs from t = 1 down to 0."""
        grid = torch.linspace(1.0, 0.0, steps + 1, device=device)
        return grid[i], grid[i + 1]


class AncestralSampler(_MaskedSamplerBase):
    """The reverse process of the forward masking: from t to s, each masked token is revealed
    with probability (alpha_s - alpha_t) / (1 - alpha_t), its value drawn from p(x0 | x_t).
    The network is called only when a token is revealed, and only there."""

    name = "ancestral"

    @torch.no_grad()
    def sample(self, canvas: torch.Tensor, fixed: torch.Tensor | None = None, *, labels: torch.Tensor | None = None,
               guidance_scale: float = 1.0, num_steps: int = 64, temperature: float = 1.0, top_k: int = 0,
               top_p: float = 1.0, block_size: int | None = None, cache: CacheMode = "none",
               generator: Generators = None, callback: StepCallback = None,
               prompt: torch.Tensor | None = None) -> torch.Tensor:
        schedule = self.method.schedule

        def step(block, x, candidates, i, steps, gen):
            t, s = self.times(i, steps, x.device)
            alpha_t, alpha_s = schedule.alpha(t), schedule.alpha(s)
            reveal_prob = 1.0 if i == steps - 1 else float((alpha_s - alpha_t) / (1.0 - alpha_t))
            # Which tokens are revealed is decided first: the vocabulary projection and the
            # sampling then run only where a token is revealed.
            reveal = ancestral_reveal(candidates, reveal_prob, gen)
            tokens = x.clone()
            if reveal.any():
                logits = filter_logits(self.reveal_logits(block, x, candidates, reveal, t), top_k, top_p)
                drawn = sample_categorical(logits, temperature, at(gen, reveal))
                tokens[reveal] = drawn
                if self.confidence is not None:  # a live view: the drawn token's probability
                    self._scores = torch.zeros(x.shape, device=x.device)
                    self._scores[reveal] = logits.float().softmax(-1).gather(-1, drawn[:, None]).squeeze(-1)
            return reveal, tokens

        return self.decode(canvas, fixed, labels=labels, guidance_scale=guidance_scale, block_size=block_size,
                           cache=cache, generator=generator, callback=callback, prompt=prompt,
                           steps_in_block=lambda free, blocks: max(1, math.ceil(num_steps / blocks)), step=step)

    def reveal_logits(self, block: BlockCalls, x, candidates, reveal, t) -> torch.Tensor:
        return block.logits(x, reveal, t)


class CachedAncestralSampler(AncestralSampler):
    """Ancestral sampling that skips the network for rows in which no token changed since its
    last call, reusing that call's prediction at every masked position.

    Exact for models without time conditioning (their output depends on x_t only); for
    time-conditioned models it reuses a slightly older time's prediction. Pays off with more
    steps than tokens, where most steps reveal nothing in a row.
    """

    name = "cached"
    options = ("num_steps", "temperature", "top_k", "top_p", "guidance_scale", "block_size")

    def reveal_logits(self, block: BlockCalls, x, candidates, reveal, t) -> torch.Tensor:
        memo = block.memo
        if memo is None or memo[0].shape[0] != x.shape[0]:
            memo = block.memo = (torch.zeros(*x.shape, self.method.special.vocab_size, device=x.device),
                                 torch.zeros(x.shape[0], dtype=torch.bool, device=x.device), x.clone())
        logits, valid, seen = memo
        valid &= (seen == x).all(-1)
        stale = (~valid).nonzero()[:, 0]
        if stale.numel():
            sub = BlockCalls(self, x[stale], block.start, block.end, None if block.labels is None else block.labels[stale],
                         None if block.prompt is None else block.prompt[stale], block.scale, "none", None,
                         inside=None if block.inside is None else block.inside[stale], active=block.active[stale])
            fresh = sub.logits(x[stale], candidates[stale], t)
            part = logits[stale]
            part[candidates[stale]] = fresh.to(part.dtype)
            logits[stale] = part
            valid[stale] = True
        seen.copy_(x)
        return logits[reveal]

    @torch.no_grad()
    def sample(self, canvas: torch.Tensor, fixed: torch.Tensor | None = None, *, labels: torch.Tensor | None = None,
               guidance_scale: float = 1.0, num_steps: int = 64, temperature: float = 1.0, top_k: int = 0,
               top_p: float = 1.0, block_size: int | None = None, generator: Generators = None,
               callback: StepCallback = None, prompt: torch.Tensor | None = None) -> torch.Tensor:
        return super().sample(canvas, fixed, labels=labels, guidance_scale=guidance_scale, num_steps=num_steps,
                              temperature=temperature, top_k=top_k, top_p=top_p, block_size=block_size,
                              cache="none", generator=generator, callback=callback, prompt=prompt)


class ConfidenceSampler(_MaskedSamplerBase):
    """Confidence-ordered unmasking (MaskGIT / LLaDA): each step predicts every masked token of
    the block and keeps the most confident ones, a fixed number per step (`tokens_per_step`, or
    an even share of the block's steps); the rest stay masked. `remasking="random"` keeps
    randomly chosen ones instead (LLaDA's ablation)."""

    name = "confidence"
    options = (*_MaskedSamplerBase.options, "tokens_per_step", "confidence", "remasking", "text_end")
    default_block_size = 8

    @torch.no_grad()
    def sample(self, canvas: torch.Tensor, fixed: torch.Tensor | None = None, *, labels: torch.Tensor | None = None,
               guidance_scale: float = 1.0, num_steps: int = 64, temperature: float = 1.0, top_k: int = 0,
               top_p: float = 1.0, tokens_per_step: int | None = None, block_size: int | None = None,
               cache: CacheMode = "none", confidence: ConfidenceKind = "prob",
               remasking: Literal["low_confidence", "random"] = "low_confidence", text_end: TextEnd = "drawn",
               generator: Generators = None, callback: StepCallback = None,
               prompt: torch.Tensor | None = None) -> torch.Tensor:
        _check_choice("confidence", confidence, CONFIDENCE_KINDS)
        _check_choice("remasking", remasking, REMASKING)
        _check_choice("text_end", text_end, TEXT_ENDS)

        def steps_in_block(free: int, blocks: int) -> int:
            if tokens_per_step:
                return max(1, math.ceil(free / tokens_per_step))
            return max(1, math.ceil(num_steps / blocks))

        def step(block, x, candidates, i, steps, gen):
            t, _ = self.times(i, steps, x.device)
            draft = self.propose(block, x, candidates, t, top_k, top_p, temperature, text_end, gen)
            remaining = draft.candidates.sum(-1)
            quota = remaining.clamp(max=tokens_per_step) if tokens_per_step else even_quota(remaining, steps - i)
            scores = None
            if remasking == "low_confidence" or self.confidence is not None:
                scores = self.scored(x, draft, confidence)
            if remasking == "random":
                commit = commit_random(draft.allowed, quota, gen)
            else:
                commit = commit_most_confident(scores, draft.allowed, quota)
            return self.with_ends(commit, draft.tokens, draft.forced)

        return self.decode(canvas, fixed, labels=labels, guidance_scale=guidance_scale, block_size=block_size,
                           cache=cache, generator=generator, callback=callback, prompt=prompt,
                           steps_in_block=steps_in_block, step=step)


class ThresholdSampler(_MaskedSamplerBase):
    """Parallel decoding by confidence (Fast-dLLM): each step commits every masked position of
    the block whose confidence reaches `threshold` (at least the most confident one), or with
    `factor` the largest n whose n-th confidence c_n has (n + 1)(1 - c_n) < factor. Easy
    stretches are written many tokens per call, hard ones a token at a time; the number of
    steps follows (at most one per free position)."""

    name = "threshold"
    options = ("temperature", "top_k", "top_p", "guidance_scale", "block_size", "cache", "threshold", "factor",
               "confidence", "text_end")
    default_block_size = 8

    @torch.no_grad()
    def sample(self, canvas: torch.Tensor, fixed: torch.Tensor | None = None, *, labels: torch.Tensor | None = None,
               guidance_scale: float = 1.0, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
               threshold: float = 0.9, factor: float | None = None, block_size: int | None = None,
               cache: CacheMode = "none", confidence: ConfidenceKind = "prob", text_end: TextEnd = "drawn",
               generator: Generators = None, callback: StepCallback = None,
               prompt: torch.Tensor | None = None) -> torch.Tensor:
        _check_choice("confidence", confidence, CONFIDENCE_KINDS)
        _check_choice("text_end", text_end, TEXT_ENDS)

        def step(block, x, candidates, i, steps, gen):
            # Time as the share of the block still masked (the network is told if it is time-conditioned).
            t = candidates.sum(-1).max().float() / (block.end - block.start)
            draft = self.propose(block, x, candidates, t, top_k, top_p, temperature, text_end, gen)
            scores = self.scored(x, draft, confidence)
            if factor is not None:
                commit = commit_by_factor(scores, draft.allowed, factor)
            else:
                commit = commit_above_threshold(scores, draft.allowed, threshold)
            return self.with_ends(commit, draft.tokens, draft.forced)

        return self.decode(canvas, fixed, labels=labels, guidance_scale=guidance_scale, block_size=block_size,
                           cache=cache, generator=generator, callback=callback, prompt=prompt,
                           steps_in_block=lambda free, blocks: free, step=step)


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {name} '{value}'; use one of: {', '.join(allowed)}")
