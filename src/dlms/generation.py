"""One generation request, as `dlms generate` and the server's `POST /v1/generate` both make it.

    request = GenerationRequest(prompt="the chef", length=32, steps=16, num_samples=2,
                                options={"temperature": 0.8})
    texts = generate(lm, request)

Both front ends fill a `GenerationRequest` (by `DiffusionLM.sample`'s argument names), and both
go through `prepare` (checks, canvas) and `DiffusionLM.run_drafts` (sampling), so they accept and
refuse exactly the same things, with the same messages: an ArgumentError names an argument,
which the command line shows as its flag and the server as its JSON field.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from .drafts import Draft
from .errors import ArgumentError
from .samplers.options import OPTION_OF_ARGUMENT

# The sampler options a request may set, by DiffusionLM.sample's argument names (steps is a field).
OPTION_ARGUMENTS = tuple(a for a in OPTION_OF_ARGUMENT if a != "steps")


@dataclass
class GenerationRequest:
    """What to generate. `prompt` (and `task`, on a prompt/response run) continues a text;
    `infill` is a template whose blanks are filled instead (`___`, `___:N`; masked and gaussian
    runs). `options`: sampler options by argument name (temperature, guidance, top_k, ...);
    None or absent means the run's default."""

    prompt: str | None = None
    task: str | None = None
    infill: str | None = None
    blank_tokens: int | None = None
    length: int | None = None
    steps: int | None = None
    num_samples: int = 1
    label: str | int | None = None
    seed: int | None = None
    sampler: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        """The combinations that make no sense: an ArgumentError naming the arguments."""
        unknown = sorted(set(self.options) - set(OPTION_ARGUMENTS))
        if unknown:
            raise ArgumentError("unknown sampler option {arg}; the options are " + ", ".join(OPTION_ARGUMENTS),
                                arg=unknown[0])
        if self.infill is None:
            if self.blank_tokens is not None:
                raise ArgumentError("{blank_tokens} sizes the blanks of {infill}; pass a template with {infill} or "
                                    "drop {blank_tokens}", blank_tokens="blank_tokens", infill="infill")
            return
        if self.task is not None:
            raise ArgumentError("{task} goes with {prompt} on a run trained on prompt/response data, not with "
                                "{infill}; drop {task}", task="task", prompt="prompt", infill="infill")
        if self.prompt is not None:
            raise ArgumentError("{infill} and {prompt} cannot be combined: the template holds all the given words; "
                                "put the prompt's words into the {infill} template and drop {prompt}",
                                infill="infill", prompt="prompt")
        if self.length is not None:
            raise ArgumentError("{length} does not apply to {infill}: the text ends where its template ends, on a "
                                "canvas of the model's training length; size the blanks with `___:N` and drop "
                                "{length}", length="length", infill="infill")


def prepare(lm, request: GenerationRequest) -> Draft:
    """The request checked and laid out for `lm` (a DiffusionLM): a Draft for `lm.run_drafts`."""
    request.check()
    options = {k: v for k, v in request.options.items() if v is not None}
    common = dict(num_samples=request.num_samples, seed=request.seed, steps=request.steps, label=request.label,
                  sampler=request.sampler, **options)
    if request.infill is not None:
        return lm.prepare_infill(request.infill, blank_tokens=request.blank_tokens, **common)
    return lm.prepare_sample(request.prompt, request.length, task=request.task, **common)


def generate(lm, request: GenerationRequest,
             callback: Callable[[int, int, list[str]], None] | None = None) -> list[str]:
    """The request's texts; `callback(step, num_steps, texts)` sees the partly denoised texts
    (masked positions shown as '_') after every step."""
    draft = prepare(lm, request)
    shown = (lambda i, n, ids: callback(i, n, lm.render(ids))) if callback else None
    ids = lm.run_drafts([draft], shown)[0]
    return lm.decode(ids, draft.start)
