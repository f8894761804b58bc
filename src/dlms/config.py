"""The configuration schema: dataclasses are the schema, YAML files are instances.

`load_config(path, overrides)` reads a YAML file, applies dotted overrides such as
`train.batch_size=16`, and checks every key and type. An unknown key or a wrong type is a
`ConfigError` that names the key and what is allowed. The `method:` section is the options
dataclass of the method it names (dlms/method_options/): another method's option is an error.
"""
from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml

from .checks import MIN_SEQ_LEN
from .errors import ConfigError
from .method_options import DEFAULT_METHOD, METHOD_OPTIONS, MaskedOptions, MethodConfig, methods_with, option_default

_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


@dataclass
class ModelConfig:
    """The backbone. `preset` fills every size field left as null."""

    backbone: str = "transformer"  # the built-in network, or a Hugging Face causal LM: a folder or Hub id
    preset: Literal["tiny", "small", "base"] = "small"
    d_model: Optional[int] = None
    n_layers: Optional[int] = None
    n_heads: Optional[int] = None
    mlp_hidden: Optional[int] = None
    max_seq_len: Optional[int] = None  # null: the data's seq_len
    causal: Optional[bool] = None  # null: what the method needs
    time_conditioning: bool = False
    num_classes: int = 0  # >0 adds class conditioning with a null class for guidance
    input_dim: int = 0  # >0: inputs_embeds of this width, projected to d_model (set by the method: gaussian)
    token_table_dim: int = 0  # >0: a separate token table [V, this] the backbone keeps (set by the method: gaussian)
    qk_norm: bool = True
    skip_connections: bool = False  # U-ViT long skips: block i feeds block n-1-i through Linear(2D -> D)
    # How time/class conditioning enters each block: adaln (shift, scale, gate on the norms)
    # or film (scale, shift on each block's output); ignored by an unconditioned backbone.
    time_conditioning_style: Literal["adaln", "film"] = "adaln"
    # Regularisation of the built-in backbone in training (off at evaluation and sampling):
    # dropout on each attention and MLP output before it joins the residual stream, on the
    # attention weights, and on the input embeddings.
    dropout: float = 0.0
    attention_dropout: float = 0.0
    embedding_dropout: float = 0.0


@dataclass
class DataConfig:
    """Where the text comes from and how it is cut into token rows."""

    dataset: str = "builtin"  # builtin[:N], a file, a folder, a saved HF dataset, hf:<name>
    builtin_examples: int = 50000
    tokenizer: Optional[str] = None  # name or path; null trains a byte-level BPE
    vocab_size: int = 1024
    # Tokens per row; null fits the data: the 99th percentile of the training examples' lengths
    # (special tokens included), rounded up to a multiple of 8, at least 16 and at most 512.
    # Training saves the number it used.
    seq_len: Optional[int] = None
    layout: Literal["packed", "padded"] = "padded"
    val_fraction: float = 0.05
    max_examples: Optional[int] = None
    train_tokens: Optional[int] = None  # keep only the first N training tokens (a unique-data budget)
    text_column: str = "text"
    label_column: Optional[str] = None  # a label column turns on class conditioning
    # text: each example is one text, modelled whole. prompt_response: each row is a prompt and a
    # response, laid out `[bos] (task [sep]) prompt [sep] response [eos] pad...` (padded layout);
    # the prompt is held clean and only the response is trained on and scored (supervised
    # fine-tuning, data-to-text; see dlms/data/prompt_response.py).
    format: Literal["text", "prompt_response"] = "text"
    prompt_column: str = "prompt"  # prompt_response: the column of prompts
    response_column: str = "response"  # prompt_response: the column of responses
    task_column: Optional[str] = None  # prompt_response: a column whose value goes before the prompt as task tokens
    task: Optional[str] = None  # prompt_response: one fixed task text before every prompt (or use task_column)
    # prompt_response: a column of chat messages ([{"role", "content"}, ...]) instead of the prompt and
    # response columns: the response is the last (assistant) turn, the prompt the turns before it,
    # rendered by the tokenizer's chat template or as `role: content` lines (dlms/data/chat.py)
    messages_column: Optional[str] = None
    split: Literal["tail", "random"] = "tail"
    cache_dir: Optional[str] = None


@dataclass
class TrainConfig:
    """The optimisation loop."""

    batch_size: int = 64
    learning_rate: float = 3e-3
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.98
    warmup_steps: int = 50
    max_steps: int = 1400
    num_epochs: Optional[float] = None  # when set, replaces max_steps
    grad_clip: float = 1.0
    grad_accum: int = 1
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 where the hardware has it
    ema_decay: float = 0.0  # 0 disables EMA weights
    eval_every: int = 500
    eval_batches: int = 16
    eval_passes: int = 2  # Monte Carlo passes of a diffusion bound at each validation
    early_stop_patience: int = 0  # stop after this many validations without a new best (0: never)
    save_every: int = 500
    log_every: int = 10
    seed: int = 0
    device: str = "auto"  # auto: cuda when available, else cpu
    out_dir: str = "runs/default"
    cond_drop_prob: float = 0.1  # labels dropped to the null class, for guidance
    # prompt/response data: share of training rows whose prompt is hidden (masked; gaussian: noised)
    # and, like a dropped label, still unscored, for guidance on the prompt (see methods/base.py)
    prompt_drop_prob: float = 0.0
    progress: bool = True
    # A run folder (`dlms train` output) whose weights the new run starts from, with its tokenizer
    # (the new data is tokenized with it) and its backbone's shape; the method may differ where the
    # weights fit (an `ar` run into a `masked` one: AR-to-diffusion conversion). See
    # dlms/training/init_from.py. Not a resume: the optimizer, steps and data position start afresh.
    init_from: Optional[str] = None
    # Under torchrun: ddp keeps a whole copy of the model in every process; fsdp shards weights,
    # gradients and optimizer state over the processes, a block at a time (training/parallel.py).
    parallel: Literal["ddp", "fsdp"] = "ddp"
    # Keep only each block's input and recompute the block in the backward pass: less memory
    # for activations, about a third more compute.
    activation_checkpointing: bool = False


@dataclass
class SampleConfig:
    """Defaults for sampling; the CLI and `DiffusionLM.sample` override them."""

    sampler: str = "auto"  # auto: the method's default sampler
    num_steps: int = 32
    num_samples: int = 8
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    guidance_scale: float = 1.0
    tokens_per_step: Optional[int] = None
    # masked samplers (see dlms/samplers/masked.py): semi-autoregressive blocks (null: the
    # sampler's default), the canvas cache, and the confidence rules of confidence/threshold.
    block_size: Optional[int] = None
    cache: Literal["none", "prefix", "dual"] = "none"
    threshold: float = 0.9  # threshold sampler: commit every position at least this confident
    factor: Optional[float] = None  # threshold sampler: the factor rule instead of the threshold
    confidence: Literal["prob", "margin", "entropy"] = "prob"
    remasking: Literal["low_confidence", "random"] = "low_confidence"  # confidence sampler
    # confidence/threshold samplers, where a text ends (dlms/samplers/masked.py): drawn from the
    # model's end-of-text probabilities at each block's first call (drawn), left to the rule at the
    # first masked position (frontier), or auto: frontier for a run trained on padded rows of plain text
    # with confidence prob, else drawn (DiffusionLM.auto_text_end)
    text_end: Literal["auto", "drawn", "frontier"] = "auto"
    eta: float = 0.0  # ddim: 0 deterministic, 1 as stochastic as ddpm
    clamp: bool = False  # ddpm/ddim: snap each x0 estimate to the nearest token embedding
    seed: int = 0


@dataclass
class EvalConfig:
    """Defaults for evaluation."""

    elbo_passes: int = 8  # Monte Carlo passes of the diffusion bound per sequence
    batch_size: int = 32
    max_batches: Optional[int] = None
    seed: int = 0


@dataclass
class DistillConfig:
    """Provenance of a student written by `dlms distill` (all empty for an ordinary run).
    Informational: training and sampling never read it."""

    teacher: Optional[str] = None  # the run that was distilled (the first round's teacher)
    teacher_steps: int = 0  # that run's sampling steps
    objective: Optional[Literal["sdtt", "progressive"]] = None  # masked: SDTT (KL); gaussian: progressive
    round: int = 0  # this student's round (its steps: teacher_steps / 2**round)
    rounds: int = 0  # rounds of the whole distillation


@dataclass
class RunConfig:
    """Everything a run needs; saved fully resolved next to every checkpoint."""

    # The options dataclass of the method it names (dlms/method_options/), e.g. MaskedOptions.
    method: MethodConfig = field(default_factory=MaskedOptions)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------- checking and building


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _check_value(key: str, value: Any, tp: Any) -> Any:
    """Return `value` converted to `tp` (int -> float only), or raise ConfigError."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _check_value(key, value, arg)
            except ConfigError:
                continue
    elif origin is Literal:
        if value in typing.get_args(tp):
            return value
    elif tp is type(None):
        if value is None:
            return None
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
            number = float(value)  # YAML 1.1 reads '3e-4' (no dot) as a string
        if number is not None:
            if not math.isfinite(number):
                raise ConfigError(f"config key '{key}' must be a finite number, got {value!r}")
            return number
    elif tp is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"config key '{key}' must be {_type_name(tp)}, got {value!r}")


def _build(cls: type, data: Any, prefix: str, saved: bool = False) -> Any:
    """An instance of dataclass `cls` from the mapping `data` (the section at `prefix`); `saved`:
    the mapping is a saved run's config.yaml (see `_build_method`)."""
    if not isinstance(data, dict):
        raise ConfigError(f"config section '{prefix or 'root'}' must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"section '{prefix}'" if prefix else "the top level"
        raise ConfigError(
            f"unknown config key '{(prefix + '.') if prefix else ''}{unknown[0]}' in {where}; "
            f"known keys: {', '.join(sorted(names))}"
        )
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        tp = hints[name]
        if tp is MethodConfig:
            kwargs[name] = _build_method(value, key, saved)
        elif dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value, key, saved)
        else:
            kwargs[name] = _check_value(key, value, tp)
    return cls(**kwargs)


def _build_method(data: Any, prefix: str, saved: bool) -> MethodConfig:
    """The flat `method:` section as the options dataclass of the method it names
    (dlms/method_options/), its types and ranges checked.

    A key of another method is a one-line error naming the methods that have it. A saved run's
    config (`saved`) written before each method had its own options carries every method's keys:
    there such a key is dropped when it holds that option's default, and is an error otherwise."""
    if not isinstance(data, dict):
        raise ConfigError(f"config section '{prefix}' must be a mapping, got {data!r}")
    name = _check_value(f"{prefix}.name", data.get("name", DEFAULT_METHOD), Literal[tuple(METHOD_OPTIONS.names())])
    cls = METHOD_OPTIONS.get(name)
    own = {f.name for f in dataclasses.fields(cls)}
    kept = {}
    for key in sorted(data):
        value = data[key]
        owners = methods_with(key)
        if key in own:
            kept[key] = value
        elif not owners:
            raise ConfigError(f"unknown config key '{prefix}.{key}' in section '{prefix}'; known keys of method "
                              f"'{name}': {', '.join(sorted(own))}")
        elif saved and all(value == option_default(o, key) for o in owners):
            continue  # an old run's copy of another method's option, at its default: it never applied
        else:
            fix = f"set {prefix}.name={owners[0]}" if len(owners) == 1 else f"set {prefix}.name to one of them"
            if saved:
                raise ConfigError(f"config key '{prefix}.{key}' = {value!r} is an option of {', '.join(owners)}, not "
                                  f"of this '{name}' run, and not its default ({option_default(owners[0], key)!r}); "
                                  f"remove it from config.yaml")
            raise ConfigError(f"config key '{prefix}.{key}' does not apply to method '{name}' (it is an option of "
                              f"{', '.join(owners)}); drop {prefix}.{key} or {fix}")
    options = _build(cls, kept, prefix)
    for key, ok, what in cls.RANGES:
        value = getattr(options, key)
        if not ok(value):
            raise ConfigError(f"config key '{prefix}.{key}' must be {what}, got {value!r}")
    return options


# (key, test, what the value must be): checked after the types.
_RANGES = [
    ("data.seq_len", lambda v: v is None or v >= MIN_SEQ_LEN, f"at least {MIN_SEQ_LEN} (or null: fit the data)"),
    ("data.vocab_size", lambda v: v >= 260, "at least 260 (256 bytes + 4 special tokens)"),
    ("data.val_fraction", lambda v: 0 < v < 1, "in (0, 1): runs are validated on held-out data"),
    ("data.max_examples", lambda v: v is None or v >= 1, "at least 1 (or null)"),
    ("data.train_tokens", lambda v: v is None or v >= 1, "at least 1 (or null)"),
    ("train.eval_passes", lambda v: v >= 1, "at least 1"),
    ("train.early_stop_patience", lambda v: v >= 0, "at least 0"),
    ("data.builtin_examples", lambda v: v >= 1, "at least 1"),
    ("train.batch_size", lambda v: v >= 1, "at least 1"),
    ("train.learning_rate", lambda v: v > 0, "positive"),
    ("train.min_lr_ratio", lambda v: 0 <= v <= 1, "in [0, 1] (the floor of the decay, as a share of the peak rate)"),
    ("train.weight_decay", lambda v: v >= 0, "at least 0"),
    ("train.beta1", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("train.beta2", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("train.warmup_steps", lambda v: v >= 0, "at least 0"),
    ("train.grad_clip", lambda v: v > 0, "positive (the largest gradient norm kept)"),
    ("train.eval_batches", lambda v: v >= 1, "at least 1"),
    ("train.seed", lambda v: v >= 0, "at least 0"),
    ("train.max_steps", lambda v: v >= 1, "at least 1"),
    ("train.num_epochs", lambda v: v is None or v > 0, "positive (or null)"),
    ("train.grad_accum", lambda v: v >= 1, "at least 1"),
    ("train.ema_decay", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("train.cond_drop_prob", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("train.prompt_drop_prob", lambda v: 0 <= v < 1, "in [0, 1) (1 would never show a prompt)"),
    ("train.eval_every", lambda v: v >= 1, "at least 1"),
    ("train.save_every", lambda v: v >= 1, "at least 1"),
    ("train.log_every", lambda v: v >= 1, "at least 1"),
    ("model.d_model", lambda v: v is None or v >= 1, "at least 1 (or null)"),
    ("model.n_layers", lambda v: v is None or v >= 1, "at least 1 (or null)"),
    ("model.n_heads", lambda v: v is None or v >= 1, "at least 1 (or null)"),
    ("model.mlp_hidden", lambda v: v is None or v >= 1, "at least 1 (or null)"),
    ("model.max_seq_len", lambda v: v is None or v >= MIN_SEQ_LEN, f"at least {MIN_SEQ_LEN} (or null)"),
    ("model.num_classes", lambda v: v >= 0, "at least 0"),
    ("model.input_dim", lambda v: v >= 0, "at least 0"),
    ("model.token_table_dim", lambda v: v >= 0, "at least 0"),
    ("model.dropout", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("model.attention_dropout", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("model.embedding_dropout", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("sample.eta", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("sample.num_steps", lambda v: v >= 1, "at least 1"),
    ("sample.num_samples", lambda v: v >= 1, "at least 1"),
    ("sample.temperature", lambda v: v >= 0, "at least 0 (0: greedy)"),
    ("sample.top_k", lambda v: v >= 0, "at least 0 (0: off)"),
    ("sample.top_p", lambda v: 0 < v <= 1, "in (0, 1] (1: off)"),
    ("sample.tokens_per_step", lambda v: v is None or v >= 1, "at least 1 (or null)"),
    ("sample.block_size", lambda v: v is None or v >= 1, "at least 1 (or null: the sampler's default)"),
    ("sample.threshold", lambda v: 0 < v <= 1, "in (0, 1]"),
    ("sample.factor", lambda v: v is None or v > 0, "positive (or null: use the threshold)"),
    ("sample.seed", lambda v: v >= 0, "at least 0"),
    ("eval.elbo_passes", lambda v: v >= 1, "at least 1"),
    ("eval.batch_size", lambda v: v >= 1, "at least 1"),
    ("eval.max_batches", lambda v: v is None or v >= 1, "at least 1 (or null)"),
    ("eval.seed", lambda v: v >= 0, "at least 0"),
    ("distill.teacher_steps", lambda v: v >= 0, "at least 0"),
    ("distill.round", lambda v: v >= 0, "at least 0"),
    ("distill.rounds", lambda v: v >= 0, "at least 0"),
]


def check_ranges(cfg: RunConfig) -> RunConfig:
    """Raise ConfigError for a value of the right type but outside its range, or for keys that
    do not go together (`check_combinations`)."""
    for key, ok, what in _RANGES:
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if not ok(value):
            raise ConfigError(f"config key '{key}' must be {what}, got {value!r}")
    return check_combinations(cfg)


def check_combinations(cfg: RunConfig) -> RunConfig:
    """ConfigError for keys that contradict each other: an option of prompt/response data set on
    plain text (it would be ignored), a task given twice, prompts in packed rows, or a tokenizer
    chosen both by data.tokenizer and by train.init_from."""
    d = cfg.data
    if d.format == "text":
        for key in ("task_column", "task", "messages_column"):
            if getattr(d, key) is not None:
                raise ConfigError(f"config key 'data.{key}' applies to prompt/response data only; set "
                                  f"data.format=prompt_response or drop data.{key}")
        if cfg.train.prompt_drop_prob > 0:
            raise ConfigError("config key 'train.prompt_drop_prob' applies to prompt/response data only (plain text "
                              "has no prompt to drop); set data.format=prompt_response or train.prompt_drop_prob=0")
    else:
        if d.task is not None and d.task_column is not None:
            raise ConfigError("data.task and data.task_column both give the task; keep one (a fixed task text, or "
                              "a column holding each row's task)")
        if d.layout != "padded":
            raise ConfigError("data.format=prompt_response lays out one example per row; set data.layout=padded")
        if d.task is not None and not d.task.strip():
            raise ConfigError("data.task is blank; give the task text or drop data.task")
        if d.messages_column is not None and (d.prompt_column, d.response_column) != ("prompt", "response"):
            given = "data.prompt_column" if d.prompt_column != "prompt" else "data.response_column"
            raise ConfigError(f"data.messages_column and {given} both say where the prompts and responses come from; "
                              "keep one: a column of chat messages, or a prompt and a response column")
    if cfg.train.init_from is not None and d.tokenizer is not None:
        raise ConfigError(f"data.tokenizer={d.tokenizer!r} and train.init_from both choose the tokenizer; a run "
                          "started from another one uses that run's tokenizer: drop data.tokenizer")
    return cfg


def dataclass_from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Any config dataclass from nested dicts, with the same checks as the run config: unknown
    keys and wrong types raise ConfigError."""
    return _build(cls, data or {}, prefix)


def config_from_dict(data: dict[str, Any], saved: bool = False) -> RunConfig:
    """Build a RunConfig from nested dicts; unknown keys, wrong types and values out of range
    raise ConfigError. `saved`: `data` is a saved run's config.yaml, whose method section may
    carry other methods' options at their defaults (see `_build_method`)."""
    return check_ranges(_build(RunConfig, data or {}, "", saved))


def parse_override(text: str) -> tuple[list[str], Any]:
    """'train.batch_size=16' -> (['train', 'batch_size'], 16); values are parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like section.key=value, e.g. train.batch_size=16")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def set_dotted(data: dict[str, Any], path: list[str], value: Any) -> None:
    node = data
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"config key '{'.'.join(path)}' goes inside a value that is not a section")
    node[path[-1]] = value


def read_yaml(path: str | Path, what: str = "config file", example: str = "configs/demo-masked.yaml",
              keys: str = "method, model, data, train, ...") -> dict[str, Any]:
    """The mapping a YAML file holds (empty for an empty file). A missing file, a folder, bad
    YAML or a file that is not a mapping is one ConfigError naming `what` and, as the fix,
    `example` (a file to model it on) or `keys` (what the mapping holds)."""
    p = Path(path)
    if not p.is_file():
        state = "is a folder, not a file" if p.is_dir() else "does not exist"
        raise ConfigError(f"{what} '{path}' {state}; pass a YAML file such as {example}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{what} '{path}' is not valid YAML ({first}); fix the file") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{what} '{path}' must hold a mapping of keys ({keys}); see {example}")
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                extra: dict[str, Any] | None = None) -> RunConfig:
    """Defaults <- YAML file <- dotted overrides <- `extra` (nested dict: the CLI's named flags)."""
    data: dict[str, Any] = read_yaml(path) if path else {}
    for item in overrides or []:
        key, value = parse_override(item)
        set_dotted(data, key, value)
    for key, value in flatten(extra or {}):
        set_dotted(data, key, value)
    return config_from_dict(data)


def flatten(data: dict[str, Any], prefix: list[str] | None = None):
    """Nested dicts -> (key path, value) pairs, e.g. {'train': {'seed': 1}} -> (['train', 'seed'], 1)."""
    for key, value in data.items():
        path = (prefix or []) + [key]
        if isinstance(value, dict):
            yield from flatten(value, path)
        else:
            yield path, value


def save_config(cfg: RunConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), encoding="utf-8")
