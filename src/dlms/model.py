"""`DiffusionLM`: the facade that puts a trained method, backbone, sampler and tokenizer together.

    lm = DiffusionLM.load_checkpoint("runs/demo-masked")
    lm.sample("the chef", length=32, steps=64)
    lm.infill("the chef ___ the soup , and it was ___:2 .")   # fill blanks (masked, gaussian)
    lm.evaluate()            # validation NLL (bound) with its standard error
    lm.respond(["name[The Eagle] food[French]"])   # a run trained on prompt/response data
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .assembly import autocast_context, build_parts, dataset_from_config, resolve_precision
from .config import RunConfig
from .drafts import Draft, stack_drafts
from .checks import check_int
from .errors import ArgumentError, CheckpointError, DlmsError
from .likelihood import evaluate_likelihood
from .methods.base import prompt_region
from .prompting import PromptLayout
from .samplers import build_sampler
from .samplers.options import SAMPLER_OPTIONS, check_option
from .samplers.randomness import RowGenerators

# A sampler option -> the argument of `sample` / `sample_ids` that sets it.
SAMPLING_ARGUMENTS = {name: option.argument for name, option in SAMPLER_OPTIONS.items()}
from .checkpoint import (find_checkpoint, load_weights, read_config, read_tensors, read_trainer_state,
                                  save_checkpoint)
from .devices import resolve_device

MASK_GLYPH = "_"
Label = str | int  # a class name, or its id


class DiffusionLM:
    """A trained model ready to sample and evaluate (any method: masked, ar, ...)."""

    def __init__(self, cfg: RunConfig, method, model: torch.nn.Module, tokenizer, label_names: dict[str, list[str]],
                 device: torch.device, precision: str | None = None):
        """`precision`: 'bf16', 'fp32' or 'auto' for sampling and evaluation (None: the run's own,
        `cfg.train.precision`, which training saves resolved)."""
        self.cfg = cfg
        self.method = method
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.label_names = label_names
        self.device = device
        self.last_sampler = None  # the sampler of the last `sample_ids` call (its `stats`)
        self.last_options: dict[str, Any] = {}  # the options it ran with (defaults filled, `auto` resolved)
        self.precision = resolve_precision(device, precision or cfg.train.precision)
        self.prompts = PromptLayout(cfg.data, tokenizer, method.special)

    @property
    def prompted(self) -> bool:
        """True for a run trained on prompt/response data: a prompt is laid out as in training
        (`prompting.py`) and samples are responses."""
        return self.prompts.on

    def autocast(self):
        """The autocast context of this model's precision (bf16 autocast, or nothing for fp32)."""
        return autocast_context(self.device, self.precision)

    # ------------------------------------------------------------------ loading
    @classmethod
    def load_checkpoint(cls, path: str | Path, device: str = "auto", expect_method: str | None = None,
                        use_ema: bool = True, precision: str | None = None) -> "DiffusionLM":
        """Load a run folder (or its checkpoint folder) written by `dlms train`; needs nothing else.
        `precision` ('bf16', 'fp32', 'auto'; None: the run's own) is used to sample and evaluate."""
        ckpt = find_checkpoint(path)
        state = read_trainer_state(ckpt)
        if expect_method is not None and state["method"] != expect_method:
            raise CheckpointError(f"checkpoint '{path}' is a '{state['method']}' model, but a '{expect_method}' "
                                  "model is needed here; pass a checkpoint of that method")
        cfg = read_config(ckpt)
        if cfg.method.name != state["method"]:
            raise CheckpointError(f"checkpoint '{path}' is damaged: its config and state disagree on the method")
        from .data import load_tokenizer

        try:
            tokenizer = load_tokenizer(str(ckpt / "tokenizer"))
        except DlmsError:
            raise CheckpointError(f"checkpoint '{path}' is damaged: its tokenizer folder cannot be read; retrain") from None
        method, model = build_parts(cfg, tokenizer, checkpoint=ckpt)
        weights = ckpt / ("ema.safetensors" if use_ema and (ckpt / "ema.safetensors").exists() else "model.safetensors")
        load_weights(model, read_tensors(weights), weights)
        return cls(cfg, method, model, tokenizer, state.get("label_names", {}), resolve_device(device), precision)

    @classmethod
    def from_trainer(cls, trainer) -> "DiffusionLM":
        """The model a Trainer holds (its EMA weights when kept), without a round trip to disk."""
        return cls(trainer.cfg, trainer.method, trainer.eval_model(), trainer.dataset.tokenizer,
                   trainer.dataset.label_names, trainer.device)

    def save(self, path: str | Path) -> Path:
        """Write a checkpoint that `load_checkpoint` reads (weights, config, tokenizer)."""
        state = {"method": self.method.name, "step": 0, "label_names": self.label_names, "data": {}}
        save_checkpoint(path, cfg=self.cfg, model=self.model, tokenizer=self.tokenizer, trainer_state=state)
        return Path(path)

    # ------------------------------------------------------------------ sampling
    @property
    def _start_tokens(self) -> list[int]:
        """What a sample starts with: bos for one-example-per-row data; for packed data an eos,
        the document boundary, so that the sample is a whole document from its first word."""
        special = self.method.special
        return [special.bos] if self.cfg.data.layout == "padded" else [special.eos]

    def _label_id(self, label: str | int | None) -> int | None:
        if label is None:
            return None
        if self.model.spec.num_classes == 0:
            raise DlmsError("this model was trained without labels; drop the label or train with data.label_column set")
        column = self.cfg.data.label_column
        names = self.label_names.get(column, [])
        if isinstance(label, str) and not label.lstrip("-").isdigit():
            if label not in names:
                raise DlmsError(f"unknown label '{label}' for column '{column}'; choose one of: {', '.join(names)}")
            return names.index(label)
        index = int(label)
        if not 0 <= index < self.model.spec.num_classes:
            raise DlmsError(f"label id {index} is out of range 0..{self.model.spec.num_classes - 1}")
        return index

    def _label_ids(self, label: Label | Sequence[Label] | None, num_samples: int) -> torch.Tensor | None:
        """One class, or one per sample, as class ids [num_samples] (None: unconditional)."""
        if label is None:
            return None
        if isinstance(label, (str, int)):
            return torch.full((num_samples,), self._label_id(label), device=self.device)
        if len(label) != num_samples:
            raise DlmsError(f"{len(label)} labels for {num_samples} samples; give one label or one per sample")
        return torch.tensor([self._label_id(x) for x in label], device=self.device)

    def balanced_labels(self, num_samples: int) -> list[str] | None:
        """Each class name in turn, `num_samples` of them (None for a model without labels)."""
        names = self.label_names.get(self.cfg.data.label_column or "", [])
        return [names[i % len(names)] for i in range(num_samples)] if names else None

    def encode_prompt(self, prompt: str | None, task: str | None = None) -> list[int]:
        """The ids a sample starts with: the start tokens and the prompt; on a prompt/response
        run the head of its rows, `[bos] (task [sep]) prompt [sep]` (see prompting.py)."""
        if self.prompted:
            return self.prompts.head(prompt, task)
        self.prompts.check_task(task)
        ids = self._start_tokens
        if prompt:
            ids = ids + self.tokenizer.encode(prompt, add_special_tokens=False)
        return ids

    def sample(self, prompt: str | None = None, length: int | None = None, steps: int | None = None,
               guidance: float | None = None, *, task: str | None = None,
               label: Label | Sequence[Label] | None = None, num_samples: int = 1,
               sampler: str | None = None, temperature: float | None = None, top_k: int | None = None,
               top_p: float | None = None, tokens_per_step: int | None = None, seed: int | None = None,
               block_size: int | None = None, cache: str | None = None, threshold: float | None = None,
               factor: float | None = None, confidence: str | None = None, remasking: str | None = None,
               text_end: str | None = None, eta: float | None = None, clamp: bool | None = None,
               callback: Callable[[int, int, list[str]], None] | None = None) -> list[str]:
        """`num_samples` texts of `length` tokens (prompt included; default the training seq_len).
        On a run trained on prompt/response data the texts are the responses to `prompt` (with
        `task`, see prompting.py): the prompt is the condition, not part of the text.

        `guidance` is the classifier-free guidance scale for `label` (1 = plain conditional);
        `label` is one class for every sample or a list with one per sample. Without a label it
        guides on the prompt, against the prompt hidden (the start token stays); a prompt/response
        run learns that unconditional branch with `train.prompt_drop_prob`. The other options
        belong to some samplers only (dlms/samplers/options.py says which): `block_size`,
        `cache`, `threshold`, `factor`, `confidence`, `remasking` to the masked samplers, `eta`
        and `clamp` to the gaussian ones; one that the chosen sampler does not take is an error.
        None means the run's default (its `sample` config section).
        `callback(step, num_steps, texts)` sees the partly denoised texts after every step.
        """
        ids = self.sample_ids(prompt, length, steps, guidance, task=task, label=label, num_samples=num_samples,
                              sampler=sampler, temperature=temperature, top_k=top_k, top_p=top_p,
                              tokens_per_step=tokens_per_step, seed=seed, block_size=block_size, cache=cache,
                              threshold=threshold, factor=factor, confidence=confidence, remasking=remasking,
                              text_end=text_end, eta=eta, clamp=clamp,
                              callback=(lambda i, n, x: callback(i, n, self.render(x))) if callback else None)
        return self.decode(ids, len(self.encode_prompt(prompt, task)) if self.prompted else None)

    # ------------------------------------------------------------------ infilling
    def infill(self, text: str, *, num_samples: int = 1, seed: int | None = None, blank_tokens: int | None = None,
               steps: int | None = None, guidance: float | None = None, label: Label | Sequence[Label] | None = None,
               sampler: str | None = None, temperature: float | None = None, top_k: int | None = None,
               top_p: float | None = None, tokens_per_step: int | None = None, block_size: int | None = None,
               cache: str | None = None, threshold: float | None = None, factor: float | None = None,
               confidence: str | None = None, remasking: str | None = None, text_end: str | None = None,
               eta: float | None = None, clamp: bool | None = None, infer_label: bool = True,
               callback: Callable[[int, int, list[str]], None] | None = None) -> list[str]:
        """`num_samples` copies of the template `text` with its blanks filled, as texts.

            lm.infill("the chef ___ the soup , and it was ___:2 .", num_samples=4)

        `___` is a blank of `blank_tokens` tokens (None: dlms.infill.DEFAULT_BLANK_TOKENS, 1),
        `___:N` one of exactly N tokens; the given words keep their tokens and never move, and the
        text ends right after the template (see dlms/infill.py for the canvas). Needs a masked or
        gaussian model: one that reads the words on both sides of a blank. `label`: one class for
        every sample or one per sample. Without one, a masked model trained with labels draws each
        sample's class from its posterior given the template's words (`infill_classes`; with
        `infer_label=False` it fills with the null class, which read the topic of the given words
        far worse on the demo: dlms/infill.py); `guidance` then contrasts that class with the null
        class, and on a model without labels the template with its given words hidden. The sampler
        and its options are `sample`'s, the run's by default (on the demo another sampler gained
        nothing that held on unseen texts, a lower temperature a little, for less diversity:
        README, Infilling); `callback(step, num_steps, texts)` sees the partly filled texts.
        """
        ids = self.infill_ids(text, num_samples=num_samples, seed=seed, blank_tokens=blank_tokens, steps=steps,
                              guidance=guidance, label=label, sampler=sampler, temperature=temperature, top_k=top_k,
                              top_p=top_p, tokens_per_step=tokens_per_step, block_size=block_size, cache=cache,
                              threshold=threshold, factor=factor, confidence=confidence, remasking=remasking,
                              text_end=text_end, eta=eta, clamp=clamp, infer_label=infer_label,
                              callback=(lambda i, n, x: callback(i, n, self.render(x))) if callback else None)
        return self.decode(ids)

    def infill_ids(self, text: str, *, num_samples: int = 1, seed: int | None = None, blank_tokens: int | None = None,
                   steps: int | None = None, guidance: float | None = None,
                   label: Label | Sequence[Label] | None = None, sampler: str | None = None,
                   temperature: float | None = None, top_k: int | None = None, top_p: float | None = None,
                   tokens_per_step: int | None = None, block_size: int | None = None, cache: str | None = None,
                   threshold: float | None = None, factor: float | None = None, confidence: str | None = None,
                   remasking: str | None = None, text_end: str | None = None, eta: float | None = None,
                   clamp: bool | None = None, infer_label: bool = True,
                   callback: Callable[[int, int, torch.Tensor], None] | None = None) -> torch.Tensor:
        """Like `infill` but returns the token ids [num_samples, W] (W the training length; the
        start tokens first, as `sample_ids` returns them)."""
        draft = self.prepare_infill(text, num_samples=num_samples, seed=seed, blank_tokens=blank_tokens, steps=steps,
                                    guidance=guidance, label=label, sampler=sampler, temperature=temperature,
                                    top_k=top_k, top_p=top_p, tokens_per_step=tokens_per_step, block_size=block_size,
                                    cache=cache, threshold=threshold, factor=factor, confidence=confidence,
                                    remasking=remasking, text_end=text_end, eta=eta, clamp=clamp,
                                    infer_label=infer_label)
        return self.run_drafts([draft], callback)[0]

    def prepare_infill(self, text: str, *, num_samples: int = 1, seed: int | None = None,
                       blank_tokens: int | None = None, steps: int | None = None, guidance: float | None = None,
                       label: Label | Sequence[Label] | None = None, sampler: str | None = None,
                       temperature: float | None = None, top_k: int | None = None, top_p: float | None = None,
                       tokens_per_step: int | None = None, block_size: int | None = None, cache: str | None = None,
                       threshold: float | None = None, factor: float | None = None, confidence: str | None = None,
                       remasking: str | None = None, text_end: str | None = None, eta: float | None = None,
                       clamp: bool | None = None, infer_label: bool = True) -> Draft:
        """`infill`'s request checked and laid out, not yet sampled (`run_drafts` samples it)."""
        from .infill import draw_classes

        self._check_infill_method()
        given = {"num_steps": steps, "temperature": temperature, "top_k": top_k, "top_p": top_p,
                 "guidance_scale": guidance, "tokens_per_step": tokens_per_step, "block_size": block_size,
                 "cache": cache, "threshold": threshold, "factor": factor, "confidence": confidence,
                 "remasking": remasking, "text_end": text_end, "eta": eta, "clamp": clamp}
        chosen, options = self._checked_sampler(sampler, given, seed)
        check_int("num_samples", num_samples, 1, optional=False)
        canvas, fixed, prompt_mask, width = self._infill_canvas(text, blank_tokens, num_samples)
        scores = self._class_scores(canvas[0], prompt_mask[0]) if label is None and infer_label else None
        if scores is not None:  # its own generator: the sampler's draws stay those of `seed`
            generator = torch.Generator(device=self.device).manual_seed(self.cfg.sample.seed if seed is None else seed)
            label = draw_classes(scores, num_samples, generator).tolist()
        return self._draft(chosen, options, canvas, fixed, prompt_mask, width, guidance=guidance, label=label, seed=seed)

    def infill_classes(self, text: str, *, blank_tokens: int | None = None) -> dict[str, float]:
        """p(class | the given words of the template `text`) by class name: what `infill` draws a
        sample's class from when no label is given (dlms.infill.class_log_likelihoods, a uniform
        prior). {} for a model trained without labels, or a gaussian one (those fill unconditioned)."""
        self._check_infill_method()
        canvas, _, given, _ = self._infill_canvas(text, blank_tokens, 1)
        scores = self._class_scores(canvas[0], given[0])
        if scores is None:
            return {}
        names = self.label_names.get(self.cfg.data.label_column or "", [])
        return {str(names[i]) if i < len(names) else str(i): float(p) for i, p in enumerate(scores.softmax(-1))}

    def _infill_canvas(self, text: str, blank_tokens: int | None,
                       num_samples: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """The template `text` on its canvas (dlms.infill.infill_canvas): (canvas [N, W], fixed,
        given words [N, W], W)."""
        from .infill import infill_canvas, parse_template, template_ids

        special = self.method.special
        pieces = parse_template(text, blank_tokens)
        ids, given_tokens = template_ids(pieces, lambda piece: self.tokenizer.encode(piece, add_special_tokens=False),
                                         special.mask, (special.pad, special.bos, special.eos, special.mask))
        width = self.cfg.data.seq_len or self.model.spec.max_seq_len
        canvas, fixed, given = infill_canvas(
            self._start_tokens, ids, given_tokens, width, eos=special.eos, pad=special.pad, mask_id=special.mask,
            padded=self.cfg.data.layout == "padded", num_samples=num_samples, device=self.device)
        return canvas, fixed, given, width

    def _class_scores(self, canvas: torch.Tensor, given: torch.Tensor) -> torch.Tensor | None:
        """log p(given words | class) for every class [C] (dlms.infill.class_log_likelihoods) on a
        masked model trained with labels; None for any other (it has no classes to choose from,
        or, gaussian, no masked prediction to score them with)."""
        from .infill import class_log_likelihoods

        classes = self.model.spec.num_classes
        if classes == 0 or self.method.name != "masked":
            return None
        with self.autocast():
            return class_log_likelihoods(self.method, self.model, canvas, given, classes)

    def _check_infill_method(self) -> None:
        """Infilling needs a model that reads both sides of a blank: masked or gaussian."""
        name = self.method.name
        if name in ("masked", "gaussian"):
            return
        if self.method.causal:
            why = "it writes left to right and never sees the words after a blank"
        elif self.method.decoding_block is not None:
            why = ("block diffusion is causal across blocks: it would fill a blank without seeing the words in the "
                   "blocks after it")
        else:
            why = "it has no infilling path"
        raise DlmsError(f"infilling needs a bidirectional model (masked or gaussian); this run is '{name}': {why}; "
                        "train one with method.name=masked (or gaussian) and pass that checkpoint",
                        cli=f"--infill needs a bidirectional model (masked or gaussian); this run is '{name}': "
                            f"{why}; train one with `dlms train method.name=masked` (or gaussian) and pass it as "
                            "--checkpoint")

    def generate_continuations(self, prompts: Sequence[str], length: int | None = None, *, seed: int = 0,
                               **sampling: Any) -> list[str]:
        """One continuation per prompt (the text after the prompt, cut at end-of-text): each
        prompt is sampled on its own canvas of `length` tokens (default the training seq_len),
        with seed `seed + i` for prompt i, so the result does not depend on how prompts are grouped.
        `sampling`: the keyword arguments of `sample_ids` (steps, sampler, temperature, label,
        task, ...). On a prompt/response run a continuation is the response (see `respond`)."""
        out = []
        for i, prompt in enumerate(prompts):
            ids = self.sample_ids(prompt, length, num_samples=1, seed=seed + i, **sampling)
            out += self.decode(ids, len(self.encode_prompt(prompt, sampling.get("task"))))
        return out

    def respond(self, prompts: str | Sequence[str], *, task: str | Sequence[str | None] | None = None,
                length: int | None = None, seed: int = 0, **sampling: Any) -> list[str]:
        """The response to each prompt, as text (only the response, cut at its end-of-text), of a
        run trained on prompt/response data. Each prompt is laid out as in training (prompting.py)
        on its own canvas of `length` tokens (default the training seq_len), with seed `seed + i`
        for prompt i. `task`: one task for every prompt or one per prompt (runs trained with
        data.task_column; a fixed data.task is put in by itself). `sampling`: the keyword
        arguments of `sample_ids` (steps, sampler, temperature, ...). A run trained on chat
        messages (data.messages_column) takes each prompt as one user turn, or a conversation:
        a list of `{"role", "content"}` messages (one such list alone is one prompt)."""
        if not self.prompted:
            raise DlmsError("respond needs a run trained on prompt/response data (data.format=prompt_response); "
                            "this one was trained on plain text: continue a prompt with sample(prompt=...) or "
                            "generate_continuations")
        one = isinstance(prompts, str) or (bool(prompts) and all(isinstance(m, dict) for m in prompts))
        prompts = [prompts] if one else list(prompts)
        tasks = self.prompts.tasks_for(task, len(prompts))
        return [self.generate_continuations([p], length, seed=seed + i, task=t, **sampling)[0]
                for i, (p, t) in enumerate(zip(prompts, tasks))]

    def canvas(self, prompt: str | None, length: int | None, num_samples: int,
               task: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The starting state: (tokens [N, L] with the prompt and masks elsewhere, fixed bool [N, L])."""
        check_int("length", length, 2)
        check_int("num_samples", num_samples, 1, optional=False)
        length = self.cfg.data.seq_len if length is None else length
        max_len = self.model.spec.max_seq_len
        if length > max_len and self.method.extends_past_training_length:  # (block: built-in backbone only)
            self.model.extend_positions(length)  # rotary positions: nothing to learn, but never trained this far
            max_len = length
        if length > max_len:
            raise ArgumentError(f"{{length}} {length} exceeds the model's maximum of {max_len} tokens (its training "
                                "length); lower {length}", length="length")
        prefix = self.encode_prompt(prompt, task)
        if len(prefix) >= length:
            raise ArgumentError(f"the prompt is {len(prefix)} tokens (with the start token"
                                f"{' and separators' if self.prompted else ''}), not shorter than {{length}} "
                                f"{length}; raise {{length}} or shorten the prompt", length="length")
        if self.method.causal and not prefix:
            raise DlmsError("an autoregressive model needs a prompt or a start token")
        # A bidirectional model reads the canvas's length as part of its input, and it has only seen
        # rows of its training length: asked for fewer tokens on a canvas that short it is off its
        # data (on the demo it predicted padding at the first position). So it samples on a canvas
        # of its training length; with padded data the positions past `length` are held as padding,
        # which is how a shorter text looks in training. `sample_ids` returns the first `length`.
        width = length
        trained = self.cfg.data.seq_len
        if not self.method.causal and trained and length < trained <= max_len:
            width = trained
        canvas = torch.full((num_samples, width), self.method.special.mask, dtype=torch.long, device=self.device)
        fixed = torch.zeros_like(canvas, dtype=torch.bool)
        if prefix:
            canvas[:, : len(prefix)] = torch.tensor(prefix, device=self.device)
            fixed[:, : len(prefix)] = True
        if width > length and self.cfg.data.layout == "padded":
            canvas[:, length:] = self.method.special.pad
            fixed[:, length:] = True
        return canvas, fixed

    def sample_ids(self, prompt: str | None = None, length: int | None = None, steps: int | None = None,
                   guidance: float | None = None, *, task: str | None = None,
                   label: Label | Sequence[Label] | None = None, num_samples: int = 1,
                   sampler: str | None = None, temperature: float | None = None, top_k: int | None = None,
                   top_p: float | None = None, tokens_per_step: int | None = None, seed: int | None = None,
                   block_size: int | None = None, cache: str | None = None, threshold: float | None = None,
                   factor: float | None = None, confidence: str | None = None, remasking: str | None = None,
                   text_end: str | None = None, eta: float | None = None, clamp: bool | None = None,
                   callback: Callable[[int, int, torch.Tensor], None] | None = None) -> torch.Tensor:
        """Like `sample` but returns the token ids [num_samples, length] (the prompt's too)."""
        draft = self.prepare_sample(prompt, length, steps, guidance, task=task, label=label, num_samples=num_samples,
                                    sampler=sampler, temperature=temperature, top_k=top_k, top_p=top_p,
                                    tokens_per_step=tokens_per_step, seed=seed, block_size=block_size, cache=cache,
                                    threshold=threshold, factor=factor, confidence=confidence, remasking=remasking,
                                    text_end=text_end, eta=eta, clamp=clamp)
        return self.run_drafts([draft], callback)[0]

    def prepare_sample(self, prompt: str | None = None, length: int | None = None, steps: int | None = None,
                       guidance: float | None = None, *, task: str | None = None,
                       label: Label | Sequence[Label] | None = None, num_samples: int = 1,
                       sampler: str | None = None, temperature: float | None = None, top_k: int | None = None,
                       top_p: float | None = None, tokens_per_step: int | None = None, seed: int | None = None,
                       block_size: int | None = None, cache: str | None = None, threshold: float | None = None,
                       factor: float | None = None, confidence: str | None = None, remasking: str | None = None,
                       text_end: str | None = None, eta: float | None = None, clamp: bool | None = None) -> Draft:
        """`sample`'s request checked and laid out on its canvas, not yet sampled: a Draft that
        `run_drafts` samples, alone or batched with others (drafts.py)."""
        # What the caller gave (None: not given), by the samplers' option names.
        given = {"num_steps": steps, "temperature": temperature, "top_k": top_k, "top_p": top_p,
                 "guidance_scale": guidance, "tokens_per_step": tokens_per_step, "block_size": block_size,
                 "cache": cache, "threshold": threshold, "factor": factor, "confidence": confidence,
                 "remasking": remasking, "text_end": text_end, "eta": eta, "clamp": clamp}
        chosen, options = self._checked_sampler(sampler, given, seed)
        canvas, fixed = self.canvas(prompt, length, num_samples, task)
        # Without labels, guidance contrasts the prompt with the prompt hidden; the start tokens stay.
        head = len(self.encode_prompt(prompt, task))
        if self.prompted:  # the positions prompt dropout hid in training (train.prompt_drop_prob)
            prompt_mask = prompt_region(torch.full((num_samples,), head, device=self.device), fixed.shape[1])
        else:
            prompt_mask = torch.zeros_like(fixed)
            prompt_mask[:, len(self._start_tokens): head] = True
        width = self.cfg.data.seq_len if length is None else length
        return self._draft(chosen, options, canvas, fixed, prompt_mask, width, guidance=guidance, label=label,
                           seed=seed, start=head if self.prompted else None)

    def _checked_sampler(self, sampler: str | None, given: dict[str, Any],
                         seed: int | None) -> tuple[Any, dict[str, Any]]:
        """(the sampler, its options by name: the given ones, else the run's defaults); `given`
        maps every sampler option to the caller's value (None: not given). A value out of range or
        an option the sampler does not take is an ArgumentError."""
        s = self.cfg.sample
        chosen = build_sampler(sampler or s.sampler, self.method, self.model)
        for option, value in given.items():
            if value is not None and option not in chosen.options:
                takes = {f"t{i}": SAMPLER_OPTIONS[o].argument for i, o in enumerate(chosen.options)}
                raise ArgumentError(f"{{arg}} does not apply to the '{chosen.name}' sampler (it takes "
                                    + ", ".join(f"{{{key}}}" for key in takes)
                                    + "); drop {arg} or choose a sampler that uses it",
                                    arg=SAMPLER_OPTIONS[option].argument, **takes)
            check_option(SAMPLER_OPTIONS[option], value)
        check_int("seed", seed, 0)
        options = {o: getattr(s, o) if given[o] is None else given[o] for o in chosen.options}
        if options.get("text_end") == "auto":
            options["text_end"] = self.auto_text_end(options["confidence"])
        return chosen, options

    def auto_text_end(self, confidence: str) -> str:
        """`text_end` "auto": "frontier" for a run trained on padded rows of plain text whose rule
        ranks positions by the drawn token's probability (`confidence` "prob"), "drawn" otherwise.
        After a padded text's end the model expects padding: a word drawn there is unlikely, so that
        rule never commits one ahead of the text, and the end at the first masked position is honest
        (built-in corpus, Yelp sentences). After a packed text's end comes the next text, whose sure
        words were committed first and pushed the end back; a rule that ranks positions by their
        distribution alone (margin, entropy) commits whatever word was drawn at a sure padding
        position (dlms/samplers/masked.py); and a response, whose length the prompt leaves open
        over a wide range, got words committed past its end at the frontier (E2E: 44 words against
        the references' 24, and BLEU 30; drawn: 32 words, BLEU 40; docs/data-to-text-e2e)."""
        data = self.cfg.data
        plain_padded = data.layout == "padded" and data.format == "text"
        return "frontier" if plain_padded and confidence == "prob" else "drawn"

    def _draft(self, chosen, options: dict[str, Any], canvas: torch.Tensor, fixed: torch.Tensor,
               prompt: torch.Tensor, width: int, *, guidance: float | None, label: Label | Sequence[Label] | None,
               seed: int | None, start: int | None = None) -> Draft:
        """A Draft of `chosen` (from `_checked_sampler`) on a prepared canvas [N, W] with fixed
        bool [N, W]; `prompt` bool [N, W]: the given tokens that guidance without labels
        contrasts with (hidden in the unconditional branch). Guidance that has nothing to guide
        towards is an ArgumentError here, before any sampling."""
        labels = self._label_ids(label, canvas.shape[0])
        if guidance is not None and guidance != 1.0 and labels is None:
            if not chosen.prompt_guidance:
                raise ArgumentError(f"{{guidance}} needs a {{label}} with the '{chosen.name}' sampler (it contrasts a "
                                    "class with the null class); pass one or leave {guidance} at 1",
                                    guidance="guidance", label="label")
            if not bool(prompt.any()):
                raise ArgumentError("{guidance} needs something to guide towards: a {prompt}, or a {label} for a "
                                    "model trained with data.label_column; pass one or leave {guidance} at 1",
                                    guidance="guidance", prompt="prompt", label="label")
            if not self.method.guides_untrained_prompts and self.cfg.train.prompt_drop_prob == 0:
                # Its unconditional branch shows the prompt as mask tokens, an input only prompt dropout trains.
                raise ArgumentError(f"{{guidance}} on the prompt needs a '{self.method.name}' run trained with "
                                    "train.prompt_drop_prob > 0 (e.g. 0.1); retrain with it, or leave {guidance} at 1",
                                    guidance="guidance")
        # The threshold rule tells a time-conditioned network the batch's largest masked share:
        # such a draft samples alone, so that no other request changes its texts.
        solo = chosen.name == "threshold" and bool(self.model.spec.time_conditioning)
        return Draft(chosen, dict(options), canvas, fixed, prompt, width, labels,
                     self.cfg.sample.seed if seed is None else seed, start, solo)

    def run_drafts(self, drafts: Sequence[Draft],
                   callback: Callable[[int, int, torch.Tensor], None] | None = None) -> list[torch.Tensor]:
        """Sample drafts that share a batch key (drafts.py) in one sampler call, under this model's
        autocast: token ids [n_i, width] per draft, each as that draft would get alone.
        `callback(step, num_steps, ids [N, width])` sees all rows, the drafts' in order."""
        drafts = list(drafts)
        canvas, fixed, prompt, labels = stack_drafts(drafts)
        first = drafts[0]
        generators = [torch.Generator(device=self.device).manual_seed(d.seed) for d in drafts]
        generator = generators[0] if len(drafts) == 1 else RowGenerators.for_groups(
            generators, [d.rows for d in drafts], self.device)
        chosen, width = first.sampler, first.width
        extra = {"prompt": prompt} if chosen.prompt_guidance else {}
        self.last_sampler = chosen  # its `stats`: steps and network calls of this call
        self.last_options = dict(first.options)
        shown = (lambda i, n, x: callback(i, n, x[:, :width])) if callback and canvas.shape[1] > width else callback
        with self.autocast():
            ids = chosen.sample(canvas, fixed, labels=labels, generator=generator, callback=shown, **first.options,
                                **extra)
        return list(ids[:, :width].split([d.rows for d in drafts]))

    def decode(self, ids: torch.Tensor, start: int | Sequence[int] | None = None) -> list[str]:
        """Token rows [B, L] -> texts: the first `start` ids dropped (default: the start tokens; one
        number, or one per row, e.g. the prompt lengths of prompt/response rows), cut at the first
        end-of-text after them."""
        special = self.method.special
        start = len(self._start_tokens) if start is None else start
        starts = [start] * ids.shape[0] if isinstance(start, (int, np.integer)) else [int(s) for s in start]
        texts = []
        for row, begin in zip(ids.tolist(), starts):
            row = row[begin:]
            if special.eos in row:
                row = row[: row.index(special.eos)]
            row = [t for t in row if t not in (special.pad, special.bos, special.mask)]
            texts.append(self.tokenizer.decode(row, skip_special_tokens=True).strip())
        return texts

    def render(self, ids: torch.Tensor) -> list[str]:
        """Partly denoised rows [B, L] -> texts with every masked token shown as '_'."""
        special = self.method.special
        out = []
        for row in ids.tolist():
            pieces, run = [], []
            for token in row[len(self._start_tokens):]:
                if token == special.mask:
                    if run:
                        pieces.append(self.tokenizer.decode(run, skip_special_tokens=False))
                        run = []
                    pieces.append(f" {MASK_GLYPH}")
                elif token != special.pad:
                    run.append(token)
            if run:
                pieces.append(self.tokenizer.decode(run, skip_special_tokens=False))
            out.append("".join(pieces).replace(self.tokenizer.eos_token, " <eos>").strip())
        return out

    # ------------------------------------------------------------------ evaluation
    def dataset(self, path: str | None = None):
        """Tokenized data in this model's format: its own training data, or `path`, with its tokenizer."""
        return dataset_from_config(self.cfg.data, path, self.tokenizer)

    def evaluate(self, dataset: Any = None, *, passes: int | None = None, batch_size: int | None = None,
                 max_sequences: int | None = None, seed: int | None = None, precision: str | None = None,
                 discrete_steps: int | None = None) -> dict[str, Any]:
        """Validation NLL per token (the ELBO bound for diffusion), perplexity and MC standard error.

        `dataset`: None (the run's own validation split), a data path, or a TokenizedDataset.
        On a run trained on prompt/response data it is the response's NLL given the prompt, per
        response token (its end-of-text counted).
        `discrete_steps` T: the T-step discrete-time bound (diffusion only) instead of the
        continuous-time one.
        """
        check_int("passes", passes, 1)
        check_int("batch_size", batch_size, 1)
        check_int("max_sequences", max_sequences, 1)
        check_int("seed", seed, 0)
        check_int("discrete_steps", discrete_steps, 1)
        if discrete_steps is not None and not self.method.supports_discrete_bound:
            raise DlmsError(f"a discrete-time bound needs a masked diffusion model; '{self.method.name}' has none")
        e = self.cfg.eval
        data = dataset if (dataset is not None and not isinstance(dataset, (str, Path))) else self.dataset(dataset)
        return evaluate_likelihood(
            self.method, self.model, data.val, batch_size=batch_size or e.batch_size, passes=passes or e.elbo_passes,
            seed=e.seed if seed is None else seed, max_sequences=max_sequences, label_column=self.cfg.data.label_column,
            autocast=autocast_context(self.device, precision or self.precision), discrete_steps=discrete_steps,
        )

    def score_continuations(self, pairs: Sequence[tuple[str, str]], *, passes: int | None = None, seed: int = 0,
                            batch_size: int = 32, label: Label | None = None) -> list[dict[str, Any]]:
        """log p(continuation | context) for (context, continuation) pairs: exact for AR, minus
        the ELBO (a lower bound, with its Monte Carlo `se`) for diffusion. See scoring.py."""
        from .scoring import encode_pair, score_sequences

        check_int("passes", passes, 1)
        check_int("batch_size", batch_size, 1, optional=False)
        check_int("seed", seed, 0, optional=False)
        max_len = self.model.spec.max_seq_len
        if self.prompted:  # the context is the prompt, laid out as in training; the continuation the response
            rows = [self._prompted_pair(c, x, max_len) for c, x in pairs]
        else:
            rows = [encode_pair(self.tokenizer, self._start_tokens, c, x, max_len) for c, x in pairs]
        labels = None if label is None else [self._label_id(label)] * len(rows)
        with self.autocast():
            return score_sequences(self.method, self.model, rows, passes=passes or self.cfg.eval.elbo_passes,
                                   seed=seed, batch_size=batch_size, labels=labels, device=self.device)

    def _prompted_pair(self, prompt: str, response: str, max_len: int) -> tuple[list[int], int]:
        """(head of `prompt` + the tokens of `response`, the number of response tokens)."""
        head = self.encode_prompt(prompt)
        tokens = self.tokenizer.encode(response, add_special_tokens=False)
        if not tokens or len(head) + len(tokens) > max_len:
            raise DlmsError(f"the response {response!r} has {len(tokens)} tokens after a {len(head)}-token prompt: "
                            f"it needs at least one and at most {max_len} together; shorten them")
        return head + tokens, len(tokens)

    @torch.no_grad()
    def score_texts(self, texts: Sequence[str]) -> dict[str, float]:
        """Exact NLL of texts under this model (AR only): {"nll", "ppl", "tokens"}.

        End-of-text policy: each text is one sequence, start token + text + eos, cut to the
        model's maximum length; every token after the start token is scored.
        """
        if not self.method.causal:
            raise DlmsError("texts can only be scored exactly by an autoregressive ('ar') model")
        special = self.method.special
        total, tokens = 0.0, 0
        max_len = self.model.spec.max_seq_len
        for text in texts:
            ids = (self._start_tokens + self.tokenizer.encode(text, add_special_tokens=False) + [special.eos])[:max_len]
            x = torch.tensor([ids], device=self.device)
            total += float(self.method.sequence_nll(self.model, x).sum())
            tokens += len(ids) - 1
        nll = total / max(tokens, 1)
        return {"nll": nll, "ppl": float(np.exp(min(nll, 50.0))), "tokens": tokens}
