"""lm-evaluation-harness adapter: any dlms checkpoint (masked diffusion, AR, ...) as an lm-eval model "dlms".

Needs the optional extra: pip install 'dlms[lm-eval]'.

Command line. lm-eval (0.4.x) finds models only in its own registry: it has no entry-point or
plugin discovery for third-party models (`--include_path` adds tasks, not models). So run its
command line through this module, which registers "dlms" first and then hands every argument
to lm-eval's own CLI unchanged:

    python -m dlms.eval.lm_eval_adapter --model dlms --model_args checkpoint=runs/demo-masked \\
        --tasks hellaswag --batch_size 32

(the `run` subcommand may be spelled out: `python -m dlms.eval.lm_eval_adapter run --model dlms ...`;
the console script `dlms-lm-eval` is the same command). lm-eval's own default device is cuda:0;
this command defaults to the device dlms picks (cuda when available, else cpu) unless --device
(or a --config file's `device`) says otherwise.
From Python, importing this module registers the model:

    import dlms.eval.lm_eval_adapter  # noqa: F401  (registers "dlms")
    lm_eval.simple_evaluate(model="dlms", model_args="checkpoint=runs/demo-masked,passes=16", tasks=[...])

model_args (comma-separated key=value; numbers may be given as strings):
    checkpoint      run folder (or its checkpoint folder) written by `dlms train` (required)
    passes          Monte Carlo passes of the diffusion ELBO per request (default: the run's eval.elbo_passes)
    seed            seed of the ELBO noise and of sampling (default 0); request i of a call uses seed + i
    batch_size      sequences per forward pass for scoring; "auto" means the run's eval.batch_size.
                    lm-eval's CLI always passes its own --batch_size (default 1), so set it there,
                    not in model_args (lm-eval rejects the same key given twice)
    device          auto (default), cpu, cuda, cuda:1, ... (lm-eval's --device sets it too; a device
                    in model_args wins over --device)
    max_gen_tokens  tokens to generate when a task gives no max_gen_toks (default 256)
    sampler         sampler for generate_until (default: the run's sample.sampler)
    steps           denoising steps for generate_until (default: the run's sample.num_steps)

Scores:
  * loglikelihood: log p(continuation | context) from `DiffusionLM.score_continuations`: exact for
    AR; for diffusion minus the ELBO, a Monte Carlo estimate of a LOWER BOUND (is_greedy is always
    False for diffusion). Context longer than the model's window loses its oldest tokens.
  * loglikelihood_rolling (perplexity tasks): the log-likelihood of the whole text, no end-of-text
    appended, conditioned on the model's start token. The text is cut into lm-eval's rolling
    windows of the model's max_seq_len (start token + text when it fits: one window; longer texts:
    each token predicted exactly once, the last window with full context). AR: the exact sum of
    log p over the windows (exact for texts that fit). Diffusion: the sum over windows of minus the
    ELBO of the window's predicted tokens, its context tokens kept clean, i.e. a lower bound on
    log p(text) for texts that fit (and on the windowed log-likelihood otherwise); ELBO noise as in
    score_continuations, passes per window.
  * generate_until: one sample per request via `DiffusionLM.generate_continuations` on a canvas of
    len(prompt tokens) + max_gen_toks, capped at the model's max_seq_len; the text is cut at the first
    stop string of "until" (and at end-of-text). Greedy (temperature 0) unless do_sample is true or
    a temperature > 0 is given without do_sample; top_p / top_k are passed through. A prompt that
    leaves fewer than min(max_gen_toks, max_seq_len // 2) free positions loses its oldest tokens.
"""
from __future__ import annotations

import sys
from typing import Any

from ..errors import DlmsError

try:
    import lm_eval.models  # noqa: F401  (lm-eval's own models, registered before ours: see get_model)
    from lm_eval import utils as lm_utils
    from lm_eval.api import registry as lm_registry
    from lm_eval.api.model import LM
except ImportError as _exc:
    if (getattr(_exc, "name", None) or "lm_eval").split(".")[0] == "lm_eval":
        raise DlmsError("lm-eval is not installed; pip install 'dlms[lm-eval]'") from None
    raise DlmsError(f"lm-eval cannot be imported ({_exc}); reinstall it: pip install 'dlms[lm-eval]'") from None

MODEL_NAME = "dlms"
DEFAULT_MAX_GEN_TOKENS = 256
_LM_EVAL_EXTRAS = {"max_batch_size"}  # what lm-eval passes to every model; unused here


def _int_arg(name: str, value: Any, minimum: int | None = None) -> int | None:
    """A model_arg as an int (lm-eval may hand over '8', 8 or 8.0); None stays None."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
        return None
    number = None
    if not isinstance(value, bool):
        try:
            as_float = float(value)
            number = int(as_float) if as_float == int(as_float) else None
        except (TypeError, ValueError, OverflowError):
            pass
    if number is None:
        raise DlmsError(f"model_arg {name}={value!r} is not an integer")
    if minimum is not None and number < minimum:
        raise DlmsError(f"model_arg {name}={number} must be at least {minimum}")
    return number


class DlmsLM(LM):
    """A dlms checkpoint as an lm-evaluation-harness model (see the module docstring)."""

    def __init__(self, checkpoint: str | None = None, passes: int | str | None = None, seed: int | str = 0,
                 batch_size: int | str | None = None, device: str | None = None,
                 max_gen_tokens: int | str | None = None, sampler: str | None = None,
                 steps: int | str | None = None, **extra: Any):
        super().__init__()
        unknown = sorted(k for k, v in extra.items() if k not in _LM_EVAL_EXTRAS and v is not None)
        if unknown:
            raise DlmsError(f"unknown model_args for 'dlms': {', '.join(unknown)}; use checkpoint, passes, seed, "
                            "batch_size, device, max_gen_tokens, sampler, steps")
        if not checkpoint:
            raise DlmsError("the 'dlms' model needs model_args checkpoint=<run folder written by `dlms train`>")
        from ..model import DiffusionLM

        self.lm = DiffusionLM.load_checkpoint(str(checkpoint), device=str(device or "auto"))
        self._device = self.lm.device
        self.checkpoint = str(checkpoint)
        self.passes = _int_arg("passes", passes, 1) or self.lm.cfg.eval.elbo_passes
        self.seed = _int_arg("seed", seed) or 0
        auto = batch_size is None or (isinstance(batch_size, str) and batch_size.strip().lower().startswith("auto"))
        self.batch_size = self.lm.cfg.eval.batch_size if auto else _int_arg("batch_size", batch_size, 1)
        self.max_gen_tokens = _int_arg("max_gen_tokens", max_gen_tokens, 1) or DEFAULT_MAX_GEN_TOKENS
        self.sampler = str(sampler) if sampler not in (None, "") else None
        self.steps = _int_arg("steps", steps, 1)
        if self.steps is not None:
            from ..samplers import build_sampler

            chosen = build_sampler(self.sampler or self.lm.cfg.sample.sampler, self.lm.method, self.lm.model)
            if "num_steps" not in chosen.options:
                raise DlmsError(f"model_args steps does not apply to the '{chosen.name}' sampler of this "
                                f"'{self.lm.method.name}' run (it writes one token per step); drop steps")

    # ------------------------------------------------------------------ lm-eval hooks
    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None) -> "DlmsLM":
        """As lm-eval's: model_args `key=value,...` plus lm-eval's own settings (see create_from_arg_obj)."""
        return cls.create_from_arg_obj(lm_utils.simple_parse_args_string(arg_string), additional_config)

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict[str, Any], additional_config: dict | None = None) -> "DlmsLM":
        """As lm-eval's, except that a device in model_args wins over lm-eval's `device` (its command
        line always sets one) instead of failing with "multiple values for keyword argument 'device'"."""
        extra = {k: v for k, v in (additional_config or {}).items()
                 if v is not None and not (k == "device" and arg_dict.get("device") is not None)}
        return cls(**arg_dict, **extra)

    @property
    def max_length(self) -> int:
        return int(self.lm.model.spec.max_seq_len)

    def get_model_info(self) -> dict[str, Any]:
        """Shown in lm-eval's results["config"]."""
        bound = self.lm.method.stochastic_bound
        return {"dlms_checkpoint": self.checkpoint, "dlms_method": self.lm.method.name,
                "dlms_loglikelihood": "minus the ELBO (lower bound)" if bound else "exact",
                "dlms_passes": self.passes if bound else None}

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """(log p(continuation | context), is_greedy) per request; see score_continuations."""
        pairs = [tuple(req.args[:2]) for req in requests]
        if not pairs:
            return []
        scores = self.lm.score_continuations(pairs, passes=self.passes, seed=self.seed, batch_size=self.batch_size)
        out = []
        for pair, score in zip(pairs, scores):
            result = (float(score["logprob"]), bool(score["greedy"]))
            self.cache_hook.add_partial("loglikelihood", pair, result)
            out.append(result)
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """log p(text) per request, windowed over long texts (policy in the module docstring)."""
        from ..scoring import score_sequences

        start = self.lm._start_tokens
        max_len = self.max_length
        rows, owner = [], []
        for i, req in enumerate(requests):
            ids = self.lm.tokenizer.encode(req.args[0], add_special_tokens=False)
            windows = lm_utils.get_rolling_token_windows(token_list=ids, prefix_token=start[-1],
                                                         max_seq_len=max_len - len(start), context_len=1)
            for w, window in enumerate(windows):
                context, pred = lm_utils.make_disjoint_window(window)
                if w == 0:
                    context = list(start)  # the whole start, not only its last token
                rows.append((list(context) + list(pred), len(pred)))
                owner.append(i)
        totals = [0.0] * len(requests)
        if rows:
            scores = score_sequences(self.lm.method, self.lm.model, rows, passes=self.passes, seed=self.seed,
                                     batch_size=self.batch_size, device=self.lm.device)
            for i, score in zip(owner, scores):
                totals[i] += float(score["logprob"])
        for req, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", (req.args[0],), total)
        return totals

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """One continuation per request, cut at the first stop string of gen_kwargs["until"]."""
        import torch

        out = []
        for i, req in enumerate(requests):
            context, gen_kwargs = req.args[0], dict(req.args[1] if len(req.args) > 1 and req.args[1] else {})
            until = gen_kwargs.pop("until", None) or []
            if isinstance(until, str):
                until = [until]
            max_gen = _int_arg("max_gen_toks", gen_kwargs.pop("max_gen_toks", None), 1) or self.max_gen_tokens
            sampling = self._sampling(gen_kwargs)
            prompt, length = self._fit_prompt(context, max_gen)
            with torch.no_grad():
                text = self.lm.generate_continuations([prompt], length, seed=self.seed + i, **sampling)[0]
            for stop in until:
                if stop and stop in text:
                    text = text.split(stop, 1)[0]
            self.cache_hook.add_partial("generate_until", (context, req.args[1] if len(req.args) > 1 else {}), text)
            out.append(text)
        return out

    # ------------------------------------------------------------------ helpers
    def _sampling(self, gen_kwargs: dict[str, Any]) -> dict[str, Any]:
        """lm-eval's gen_kwargs -> generate_continuations keywords (greedy unless asked to sample)."""
        temperature = gen_kwargs.get("temperature")
        temperature = None if temperature is None else float(temperature)
        do_sample = gen_kwargs.get("do_sample")
        if isinstance(do_sample, str):
            do_sample = do_sample.strip().lower() == "true"
        if do_sample is None:
            do_sample = bool(temperature and temperature > 0)
        sampling: dict[str, Any] = {"temperature": (1.0 if temperature is None else temperature) if do_sample else 0.0}
        if do_sample and gen_kwargs.get("top_p") is not None:
            sampling["top_p"] = float(gen_kwargs["top_p"])
        if do_sample and gen_kwargs.get("top_k") is not None:
            sampling["top_k"] = int(gen_kwargs["top_k"])
        if self.steps is not None:
            sampling["steps"] = self.steps
        if self.sampler is not None:
            sampling["sampler"] = self.sampler
        return sampling

    def _fit_prompt(self, context: str, max_gen: int) -> tuple[str, int]:
        """(prompt, canvas length): the canvas holds the prompt and up to max_gen new tokens within
        max_seq_len; a prompt leaving fewer than min(max_gen, max_seq_len // 2) free positions
        loses its oldest tokens."""
        max_len = self.max_length
        room = max(1, min(max_gen, max_len // 2))
        n_prompt = len(self.lm.encode_prompt(context))
        if n_prompt + room > max_len:
            ids = self.lm.tokenizer.encode(context, add_special_tokens=False)
            keep = max_len - room - len(self.lm._start_tokens)
            context = ""
            while keep > 0:
                candidate = self.lm.tokenizer.decode(ids[-keep:], skip_special_tokens=True)
                if len(self.lm.encode_prompt(candidate)) + room <= max_len:  # decoding may not round-trip
                    context = candidate
                    break
                keep -= 1
            n_prompt = len(self.lm.encode_prompt(context))
        return context, min(n_prompt + max_gen, max_len)


_models = getattr(lm_registry, "model_registry", None)
if _models is None:  # lm-eval before the Registry class: a plain dict
    _models = lm_registry.MODEL_REGISTRY
if MODEL_NAME not in _models:  # `python -m` runs this file as __main__ as well as under its own name
    lm_registry.register_model(MODEL_NAME)(DlmsLM)


def with_default_device(args: list[str]) -> list[str]:
    """`args` plus `--device <dlms's choice>` (cuda when available, else cpu) for an evaluation
    that sets no device; lm-eval would otherwise use cuda:0, which fails on a CPU machine.

    Left unchanged: a device given as `--device X`, `--device=X` (or an abbreviation such as
    `--dev X`) or in a `--config`/`-C` YAML file; and commands that evaluate nothing (`ls`,
    `validate`, help, a bare `run`).
    """
    evaluates = args[:1] not in (["ls"], ["validate"]) and any(a != "run" for a in args)
    if not evaluates or "-h" in args or "--help" in args:
        return list(args)
    for i, arg in enumerate(args):
        option = arg.split("=", 1)[0]
        if len(option) >= 3 and "--device".startswith(option):  # argparse accepts unique prefixes
            return list(args)
        config = None
        if option in ("--config", "-C"):
            config = arg.split("=", 1)[1] if "=" in arg else (args[i + 1] if i + 1 < len(args) else None)
        elif arg.startswith("-C") and len(arg) > 2:
            config = arg[2:]
        if config and _config_sets_device(config):
            return list(args)
    from ..devices import resolve_device

    return [*args, "--device", str(resolve_device("auto"))]


def _config_sets_device(path: str) -> bool:
    """True when lm-eval's YAML config at `path` names a device (lm-eval reports unreadable files)."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and data.get("device") is not None


def main(argv: list[str] | None = None) -> int:
    """lm-eval's command line with the "dlms" model registered: `python -m dlms.eval.lm_eval_adapter <args>`
    (the `dlms-lm-eval` console script). The device defaults to dlms's choice: see `with_default_device`."""
    from lm_eval.__main__ import cli_evaluate

    sys.argv = ["lm-eval", *with_default_device(list(sys.argv[1:] if argv is None else argv))]
    try:
        cli_evaluate()
    except DlmsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
