"""The models a server holds, each behind one small interface: describe itself (`info`), check
and lay out a request (`prepare`, in the request's thread, so that bad input is a 4xx before
any work is queued), and run a batch of prepared requests (`run`, in the worker thread).

- `ModelEngine`: a `dlms train` run (masked, block, gaussian, ar), through the generation
  path `dlms generate` uses (dlms/generation.py), batched with `DiffusionLM.run_drafts`.
- `DglmEngine`: a `dlms dglm train` run; each request runs alone.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from ..errors import ArgumentError, ConfigError, DlmsError
from ..generation import GenerationRequest, OPTION_ARGUMENTS, prepare
from .frames import TokenPieces, frame

Watcher = Callable[[dict], None] | None  # receives a request's frames as they are made


@dataclass
class Outcome:
    """What one request got: its texts and how the call that made them went."""

    texts: list[str]
    tokens: int  # tokens generated (masked positions filled, padding not counted)
    steps: int
    network_calls: int
    seconds: float  # sampling time of the batch the request was part of
    batch_requests: int
    batch_rows: int
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)

    def json(self) -> dict[str, Any]:
        return {"texts": self.texts, "tokens": self.tokens, "steps": self.steps, "network_calls": self.network_calls,
                "seconds": round(self.seconds, 4),
                "tokens_per_second": round(self.tokens / self.seconds, 1) if self.seconds > 0 else None,
                "batch_requests": self.batch_requests, "batch_rows": self.batch_rows, "seed": self.seed,
                "options": self.options}


def arguments(options: dict[str, Any]) -> dict[str, Any]:
    """Sampler options by the request's field names (guidance, not guidance_scale)."""
    from ..samplers.options import SAMPLER_OPTIONS

    return {SAMPLER_OPTIONS[k].argument if k in SAMPLER_OPTIONS else k: v for k, v in options.items()}


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class ModelEngine:
    """A DiffusionLM behind the server."""

    def __init__(self, name: str, lm, path: str):
        from ..samplers import SAMPLERS
        from ..samplers.options import SAMPLER_OPTIONS

        self.name, self.lm, self.path = name, lm, path
        special = lm.method.special
        self.pieces = TokenPieces(lm.tokenizer, special.mask, special.pad, special.eos)
        self.samplers = {n: [SAMPLER_OPTIONS[o].argument for o in SAMPLERS.get(n).options]
                         for n in SAMPLERS.names() if lm.method.name in SAMPLERS.get(n).method_names}

    def info(self) -> dict[str, Any]:
        from ..samplers.options import SAMPLER_OPTIONS

        lm, cfg = self.lm, self.lm.cfg
        column = cfg.data.label_column
        return {
            "name": self.name, "path": self.path, "kind": "diffusion" if not lm.method.causal else "autoregressive",
            "method": lm.method.name, "parameters": parameter_count(lm.model),
            "tokenizer": {"type": type(lm.tokenizer).__name__, "vocab_size": len(lm.tokenizer)},
            "seq_len": cfg.data.seq_len, "max_length": lm.model.spec.max_seq_len,
            "labels": list(lm.label_names.get(column, [])) if column else [], "label_column": column,
            "prompted": lm.prompted, "infill": lm.method.name in ("masked", "gaussian"),
            "samplers": self.samplers, "default_sampler": cfg.sample.sampler if cfg.sample.sampler != "auto"
            else lm.method.default_sampler,
            "defaults": {"steps": cfg.sample.num_steps,
                         **{o.argument: getattr(cfg.sample, o.name) for o in SAMPLER_OPTIONS.values()
                            if o.name != "num_steps" and hasattr(cfg.sample, o.name)}},
            "precision": lm.precision, "device": str(lm.device),
        }

    def prepare(self, fields: dict[str, Any]):
        """The request's Draft (dlms/drafts.py); a DlmsError for anything it cannot do."""
        if "control" in fields:
            raise ArgumentError("{arg} steers a DGLM run; this model is a '" + self.lm.method.name
                                + "' run: drop {arg}", arg="control")
        options = {k: fields[k] for k in OPTION_ARGUMENTS if k in fields}
        request = GenerationRequest(prompt=fields.get("prompt"), task=fields.get("task"), infill=fields.get("infill"),
                                    blank_tokens=fields.get("blank_tokens"), length=fields.get("length"),
                                    steps=fields.get("steps"), num_samples=fields.get("num_samples", 1),
                                    label=fields.get("label"), seed=fields.get("seed"), sampler=fields.get("sampler"),
                                    options=options)
        return prepare(self.lm, request)

    def batch_key(self, draft) -> tuple:
        return (self.name, draft.batch_key())

    def rows(self, draft) -> int:
        return draft.rows

    def first_frame(self, draft) -> dict:
        """Step 0: the canvas before any step (given tokens and masks)."""
        start = self._start(draft)
        out = frame(0, 0, draft.canvas[:, :draft.width], None, None, start, self.pieces)
        out["given"] = draft.fixed[0, start:draft.width].nonzero()[:, 0].tolist()
        return out

    def _start(self, draft) -> int:
        return len(self.lm._start_tokens) if draft.start is None else draft.start

    def run(self, drafts: list, watchers: list[Watcher]) -> list[Outcome]:
        """Sample the drafts (one batch key) in one call; each watcher gets its request's frames."""
        offsets = [0]
        for d in drafts:
            offsets.append(offsets[-1] + d.rows)
        previous = [d.canvas[:, :d.width].clone() for d in drafts]

        def show(step: int, total: int, ids: torch.Tensor) -> None:
            confidence = getattr(self.lm.last_sampler, "confidence", None)
            for i, (d, watch) in enumerate(zip(drafts, watchers)):
                if watch is None:
                    continue
                rows = ids[offsets[i]:offsets[i + 1]]
                conf = None if confidence is None else confidence[offsets[i]:offsets[i + 1], :d.width]
                watch(frame(step, total, rows, previous[i], conf, self._start(d), self.pieces))
                previous[i] = rows.clone()

        callback = show if any(w is not None for w in watchers) else None
        began = time.perf_counter()
        ids = self.lm.run_drafts(drafts, callback)
        seconds = time.perf_counter() - began
        stats = self.lm.last_sampler.stats
        special = self.lm.method.special
        out = []
        for d, rows in zip(drafts, ids):
            made = ~d.fixed[:, :d.width] & (rows != special.pad) & (rows != special.mask)
            out.append(Outcome(self.lm.decode(rows, d.start), int(made.sum()), stats.steps, stats.network_calls,
                               seconds, len(drafts), offsets[-1], d.seed,
                               {"sampler": d.sampler.name, **arguments(d.options)}))
        return out


class DglmEngine:
    """A DGLM pipeline behind the server: prompt -> prefix, `control` and `guidance` steer it."""

    FIELDS = ("prompt", "num_samples", "seed", "steps", "temperature", "guidance", "control")

    def __init__(self, name: str, pipeline, path: str):
        self.name, self.pipeline, self.path = name, pipeline, path

    def controls(self) -> dict[str, list[str]]:
        """Attribute -> class names of the classifiers fitted for this run."""
        from ..dglm.control import LinearClassifier

        found = {}
        for path in sorted((Path(self.pipeline.run_dir) / "classifiers").glob("*.json")):
            try:
                found[path.stem] = list(LinearClassifier.load(path.with_suffix("")).classes)
            except (DlmsError, OSError, ValueError, KeyError):
                continue  # a damaged classifier is left out of the list, and refused if asked for
        return found

    def info(self) -> dict[str, Any]:
        p, g = self.pipeline, self.pipeline.cfg.generation
        return {
            "name": self.name, "path": self.path, "kind": "dglm", "method": "dglm",
            "parameters": parameter_count(p.diffusion.denoiser) + parameter_count(p.decoder),
            "encoder": p.cfg.sentence_encoder_model_name, "decoder": p.cfg.auto_regressive_model_name,
            "tokenizer": {"type": type(p.tokens.tokenizer).__name__, "vocab_size": len(p.tokens.tokenizer)},
            "max_length": g.max_tokens, "controls": self.controls(), "samplers": {g.sampler: list(self.FIELDS[3:6])},
            "default_sampler": g.sampler, "labels": [], "prompted": False, "infill": False,
            "defaults": {"steps": g.num_steps, "temperature": g.temperature, "guidance": g.guidance},
            "precision": p.precision, "device": str(p.device),
        }

    def prepare(self, fields: dict[str, Any]) -> dict[str, Any]:
        from ..checks import check_int, check_number

        extra = sorted(set(fields) - set(self.FIELDS))
        if extra:
            raise ArgumentError("{arg} does not apply to a DGLM run (it takes " + ", ".join(self.FIELDS)
                                + "); drop {arg}", arg=extra[0])
        prefix = fields.get("prompt", "")
        check_int("num_samples", fields.get("num_samples", 1), 1)
        check_int("seed", fields.get("seed"), 0)
        check_number("guidance", fields.get("guidance"), 0.0, note="0: off")
        overrides = {"num_steps": fields.get("steps"), "temperature": fields.get("temperature")}
        try:
            self.pipeline.settings(**overrides)
            for attribute, value in (fields.get("control") or {}).items():
                self.pipeline.classifier(attribute).class_index(value)
        except ConfigError as exc:  # its messages name the settings: the fields here are steps, temperature
            message = str(exc).replace("num_steps", "steps")  # the request field
            raise ArgumentError(message.replace("{", "{{").replace("}", "}}")) from None
        if not self.pipeline.fits(prefix):
            raise ArgumentError("{arg} is longer than " + str(self.pipeline.cfg.decoder.max_prefix_tokens - 1)
                                + " tokens, the longest prefix this DGLM run was trained on; shorten it", arg="prompt")
        return {"prefix": prefix, "num_samples": fields.get("num_samples", 1), "seed": fields.get("seed", 0),
                "control": fields.get("control"), "guidance": fields.get("guidance"), "overrides": overrides}

    def batch_key(self, work) -> tuple:
        return (self.name, "solo", id(work))  # the pipeline draws for a whole batch from one generator

    def rows(self, work) -> int:
        return work["num_samples"]

    def first_frame(self, work) -> dict:
        return {"step": 0, "total": 0, "rows": [], "given": []}

    def run(self, works: list, watchers: list[Watcher]) -> list[Outcome]:
        out = []
        for work in works:
            began = time.perf_counter()
            texts = self.pipeline.generate(work["prefix"], work["num_samples"], control=work["control"],
                                           guidance=work["guidance"], seed=work["seed"], **work["overrides"])
            seconds = time.perf_counter() - began
            tokens = sum(len(self.pipeline.tokens.tokenizer.encode(t, add_special_tokens=False)) for t in texts)
            steps = work["overrides"]["num_steps"] or self.pipeline.cfg.generation.num_steps
            out.append(Outcome(texts, tokens, steps, steps, seconds, 1, work["num_samples"], work["seed"],
                               {k: v for k, v in work["overrides"].items() if v is not None}))
        return out


def load_engine(name: str, path: str, device: str = "auto", precision: str | None = None):
    """A DGLM run (it has a DGLM run config) or a `dlms train` run, loaded for serving."""
    from ..dglm.pipeline import DglmPipeline
    from ..run_folder import DGLM_RUN_CONFIG

    if (Path(path) / DGLM_RUN_CONFIG).is_file():
        return DglmEngine(name, DglmPipeline.load(path, None if device == "auto" else device, precision), path)
    from ..model import DiffusionLM

    return ModelEngine(name, DiffusionLM.load_checkpoint(path, device=device, precision=precision), path)
