"""The JSON a client sends to `POST /v1/generate`, and the server's limits on it.

Field names are `DiffusionLM.sample`'s argument names (and `dlms generate`'s flags: `length` is
`--seq_len`, `steps` `--num_steps`), so an error from the shared generation path
(dlms/generation.py) names the field as it is. Types are strict (a string is not a number) and
unknown fields are refused; ranges are checked by the generation path itself, the server's
limits here.
"""
from __future__ import annotations

from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from typing import Any, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from ..errors import ArgumentError
from ..generation import OPTION_ARGUMENTS, GenerationRequest
from ..samplers.options import OPTION_OF_ARGUMENT, SAMPLER_OPTIONS

MAX_TEXT_CHARS = 4000  # a prompt or template longer than this cannot fit any model served here


class _BodyBase(BaseModel):
    """What only the server asks for, around a generation request's own fields."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str | None = Field(None, description="which served model (GET /v1/models); default: the first")
    stream: bool = Field(False, description="answer with Server-Sent Events: a `step` event per denoising step, "
                                            "then `done` with the result")

    def fields(self) -> dict[str, Any]:
        """The request's own fields that were given (not null), without `model` and `stream`."""
        return {k: v for k, v in self.model_dump(exclude_unset=True).items()
                if v is not None and k not in ("model", "stream")}


# What the server adds to a request field: its limits and its description in the API docs.
EXTRAS: dict[str, dict[str, Any]] = {
    "prompt": dict(max_length=MAX_TEXT_CHARS, description="text the sample starts with (DGLM: the prefix to continue)"),
    "task": dict(max_length=MAX_TEXT_CHARS, description="prompt/response runs with a task column"),
    "infill": dict(max_length=MAX_TEXT_CHARS,
                   description="a template whose blanks are filled: `___`, or `___:N` for N tokens"),
    "length": dict(description="tokens per sample, prompt included"),
    "steps": dict(description="denoising steps (DGLM: of the latent diffusion)"),
    "guidance": dict(description="classifier-free guidance scale (DGLM: strength of the attribute control)"),
}


def _request_fields() -> dict[str, Any]:
    """GenerationRequest's fields as pydantic field definitions, in its order, its `options` laid
    out flat: one field per sampler option, typed by the options table (samplers/options.py)."""
    types = get_type_hints(GenerationRequest)
    out: dict[str, Any] = {}
    for f in dataclass_fields(GenerationRequest):
        if f.name != "options":
            out[f.name] = (types[f.name], Field(f.default, **EXTRAS.get(f.name, {})))
            continue
        for argument in OPTION_ARGUMENTS:
            option = SAMPLER_OPTIONS[OPTION_OF_ARGUMENT[argument]]
            out[argument] = (option.type | None, Field(None, **EXTRAS.get(argument, {})))
    return out


# One declaration of a request: GenerationRequest's fields (dlms generate fills the same), with
# the server's `model` and `stream` before them and DGLM's `control` after.
GenerateBody = create_model(
    "GenerateBody", __base__=_BodyBase, __module__=__name__,
    __doc__="A generation request. Omitted (or null) fields take the model's defaults.", **_request_fields(),
    control=(dict[str, str] | None, Field(None, description="DGLM: attribute -> class, e.g. {\"sentiment\": "
                                                             "\"positive\"}")))


def first_problem(error: ValidationError) -> str:
    """One line for the first problem pydantic found: the field and what is wrong."""
    problem = error.errors()[0]
    where = ".".join(str(part) for part in problem["loc"])
    if problem["type"] == "extra_forbidden":
        return f"unknown field '{where}'; the fields are: {', '.join(GenerateBody.model_fields)}"
    if problem["type"] == "model_type" or not where:
        return "the body must be a JSON object of generation fields, e.g. {\"prompt\": \"the cat\", \"steps\": 16}"
    return f"field '{where}': {problem['msg']}"


@dataclass(frozen=True)
class ServeLimits:
    """What one request may ask for, and how much waiting work the server holds."""

    max_length: int = 512  # tokens per sample
    max_steps: int = 512
    max_samples: int = 16
    max_queue: int = 64  # requests waiting; beyond it a request is answered 429
    max_batch_rows: int = 64  # sample rows that share one sampler call
    batching: bool = True
    batch_window_s: float = 0.002  # how long the worker waits for company before a batch starts
    queue_timeout_s: float = 60.0  # a request waiting longer than this is answered 503
    max_body_bytes: int = 64 * 1024

    def check(self, fields: dict[str, Any]) -> None:
        """An ArgumentError when a request asks for more than these limits allow."""
        for name, limit, flag in (("length", self.max_length, "max_length"), ("steps", self.max_steps, "max_steps"),
                                  ("num_samples", self.max_samples, "max_samples"),
                                  ("blank_tokens", self.max_length, "max_length")):
            value = fields.get(name)
            if isinstance(value, int) and value > limit:
                raise ArgumentError("{arg} " + str(value) + f" is above this server's limit of {limit} "
                                    f"(dlms serve --{flag}); ask for at most {limit}", arg=name)
