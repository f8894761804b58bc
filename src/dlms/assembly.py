"""How a RunConfig becomes working parts: the dataset, the method and the backbone.

Shared by the trainer and the `DiffusionLM` facade so that both build exactly the same thing.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import replace

import torch

from .backbones import backbone_kind, build_backbone, resolve_model_config
from .backbones.huggingface import load_hf_config
from .config import DataConfig, RunConfig
from .errors import ConfigError
from .methods import METHODS, Method, SpecialTokens, build_method


def builder_from_config(cfg: DataConfig):
    """The `DatasetBuilder` of a data section: it reads, splits and lays out the data as the run did."""
    from .data import DatasetBuilder

    prompted = cfg.format == "prompt_response"
    return DatasetBuilder(
        seq_len=cfg.seq_len, layout=cfg.layout, val_fraction=cfg.val_fraction, max_examples=cfg.max_examples,
        text_column=cfg.text_column, label_columns=[cfg.label_column] if cfg.label_column else [],
        split=cfg.split, builtin_examples=cfg.builtin_examples, cache_dir=cfg.cache_dir,
        prompt_column=cfg.prompt_column if prompted and cfg.messages_column is None else None,
        response_column=cfg.response_column, task_column=cfg.task_column if prompted else None,
        task=cfg.task if prompted else None, messages_column=cfg.messages_column if prompted else None,
    )


def dataset_from_config(cfg: DataConfig, path: str | None = None, tokenizer=None):
    """Tokenized train/validation splits (cached on disk) for a data section.

    `path` replaces `cfg.dataset` and `tokenizer` the configured one (e.g. a checkpoint's own).
    """
    dataset = builder_from_config(cfg).build_from_raw(path or cfg.dataset, tokenizer or cfg.tokenizer or cfg.vocab_size)
    if cfg.train_tokens is not None:
        dataset.train = dataset.train.head_tokens(cfg.train_tokens)
    return dataset


def special_tokens(tokenizer) -> SpecialTokens:
    from .data import special_ids

    return SpecialTokens.from_dict(special_ids(tokenizer))


def resolve_run_config(cfg: RunConfig, method: Method, label_names: dict[str, list[str]] | None = None) -> RunConfig:
    """Fill the model's sizes from its preset, causality from the method, classes from the labels."""
    method.check_run_config(cfg)  # what only the method knows it cannot train, again: data.seq_len is known now
    model = resolve_model_config(cfg.model, cfg.data.seq_len, method.causal)
    if cfg.data.label_column:
        names = (label_names or {}).get(cfg.data.label_column)
        if not names:
            raise ConfigError(f"label column '{cfg.data.label_column}' has no values in the data; "
                              "check data.label_column")
        if model.num_classes not in (0, len(names)):
            raise ConfigError(f"model.num_classes={model.num_classes} but label column "
                              f"'{cfg.data.label_column}' has {len(names)} values; leave it 0")
        model = replace(model, num_classes=len(names))
    # What the method needs of the backbone: time conditioning, a wider input (gaussian: [z_t, x0, flag]).
    if method.needs_time:
        model = replace(model, time_conditioning=True)
    method_cfg = cfg.method
    if method.reads_vectors:  # gaussian: its own token table (embed_dim > 0) or the backbone's embeddings
        kind = backbone_kind(model.backbone)
        table_dim = method.table_dim(pretrained=kind.pretrained)
        embed_dim = table_dim or kind.embedding_width(model)
        model = replace(model, input_dim=method.input_width(embed_dim), token_table_dim=table_dim)
        method_cfg = replace(method_cfg, embed_dim=table_dim)
    if method.schedule_name is not None:
        # The schedule by its resolved name ("auto" -> the method's default), so saved runs are explicit.
        method_cfg = replace(method_cfg, schedule=method.schedule_name)
    return replace(cfg, model=model, method=method_cfg)


def build_parts(cfg: RunConfig, tokenizer, checkpoint=None):
    """(method, backbone) for a resolved config and its tokenizer; `checkpoint`: the folder whose
    weights go in next (a pretrained backbone is rebuilt from the architecture saved there)."""
    special = special_tokens(tokenizer)
    method = build_method(cfg.method, special)
    return method, build_backbone(cfg.model, special.vocab_size, checkpoint)


def check_prompt_response(cfg: RunConfig) -> None:
    """ConfigError when the data are prompt/response rows and the method has no prompt hook
    (`trains_on_responses`, see methods/base.py): it would noise and score the prompts; or when
    prompt dropout is asked of a method that does not declare it (`drops_prompts`: ar)."""
    if cfg.data.format != "prompt_response":
        return
    cls = METHODS.get(cfg.method.name)
    if not cls.trains_on_responses:
        able = [n for n in METHODS.names() if METHODS.get(n).trains_on_responses]
        raise ConfigError(f"method '{cfg.method.name}' cannot train on prompt/response data (data.format="
                          f"prompt_response): it has no way to hold the prompt clean; use one of: {', '.join(able)}, "
                          "or data.format=text")
    if cfg.train.prompt_drop_prob > 0 and not cls.drops_prompts:
        able = [n for n in METHODS.names() if METHODS.get(n).drops_prompts]
        raise ConfigError(f"method '{cfg.method.name}' cannot drop prompts (train.prompt_drop_prob): it has no "
                          "guidance on the prompt to train (its sampler guides on labels only); set "
                          f"train.prompt_drop_prob=0 or use one of: {', '.join(able)}")


def backbone_tokenizer(cfg: RunConfig) -> RunConfig:
    """A pretrained backbone brings its tokenizer: `data.tokenizer` null becomes `model.backbone`
    (unless the run starts from another, `train.init_from`, whose tokenizer it takes).

    The backbone is looked up first, so that one that cannot be found is a one-line error
    before any data work, and so is a method that cannot use this backbone or these data."""
    METHODS.get(cfg.method.name).check_run_config(cfg)
    check_prompt_response(cfg)
    if not backbone_kind(cfg.model.backbone).pretrained:
        return cfg
    load_hf_config(cfg.model.backbone)
    if cfg.data.tokenizer is None and cfg.train.init_from is None:
        cfg = replace(cfg, data=replace(cfg.data, tokenizer=cfg.model.backbone))
    return cfg


def bf16_is_fast(device: torch.device) -> bool:
    """bf16 pays off on CUDA and on CPUs with native bf16 (AVX512-BF16 or AMX); elsewhere
    it is emulated and slower than fp32 (measured: 2x slower on AVX512 without BF16)."""
    if device.type == "cuda":
        return True
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(cpu, name, lambda: False)() for name in checks)


def resolve_precision(device: torch.device, precision: str) -> str:
    """'auto' -> 'bf16' where bf16 is fast on `device`, else 'fp32'; 'bf16' and 'fp32' as given."""
    if precision == "auto":
        return "bf16" if bf16_is_fast(device) else "fp32"
    if precision not in ("bf16", "fp32"):
        raise ConfigError(f"precision must be one of 'auto', 'bf16', 'fp32', got {precision!r}")
    return precision


def precision_note(device: torch.device, asked: str) -> str:
    """What a run prints about its precision, e.g. 'bf16 (auto: native bf16 on this cpu)'."""
    chosen = resolve_precision(device, asked)
    if asked != "auto":
        return chosen
    why = "native bf16" if chosen == "bf16" else "no native bf16"
    return f"{chosen} (auto: {why} on this {device.type})"


def autocast_context(device: torch.device, precision: str):
    """bf16 autocast on CPU and CUDA, or nothing for fp32; 'auto' picks bf16 where it is fast.
    Weights stay float32 (the optimiser's master copy); autocast picks the compute dtype."""
    if resolve_precision(device, precision) == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()
