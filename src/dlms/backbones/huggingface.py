"""A pretrained Hugging Face causal LM as the backbone: fine-tune an AR model into a diffusion model.

`model.backbone` names the model: a local folder written by `save_pretrained` or a Hub id
(`Qwen/Qwen2.5-0.5B`, a Llama, GPT-2, ...). `HFBackbone` gives it the interface of the
built-in `Transformer` (`hidden`, `logits`, `forward(select=...)`, `spec`, `null_class`,
`new_cache`, `embed`) and adds what a diffusion method needs:

- bidirectional attention when the method is not causal: `config.is_causal = False`, which
  transformers 5.x honours for Qwen2, Llama and GPT-2 (it builds a full mask and passes
  `is_causal=False` to the attention function); checked on a probe input at construction, so
  an architecture that ignores it is an error, never a silently causal "diffusion" model;
- time (and class) conditioning: a learned embedding added to the input embeddings, with a
  zero-initialised output so that the pretrained model starts unchanged;
- room for added tokens: the embeddings are resized to the tokenizer's size (an added mask
  token gets a new row; Qwen's unused padding rows are dropped), so `embed.weight` is
  [V, D] and the logits cover exactly the tokenizer's V ids;
- `inputs_embeds` of another width through an input projection (`input_dim`).

Weights are float32 (the optimiser's master copy); bf16 compute comes from autocast
(`train.precision`). A checkpoint stores the model's `config.json` under `backbone/`, so it
is rebuilt with `from_config` and its saved weights: the pretrained folder is not needed.

`transformers` is imported inside the functions so that `import dlms` stays light.
"""
from __future__ import annotations

import inspect
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import ModelConfig
from ..errors import ConfigError
from ..hub import Pretrained, causal_lm_copy, from_hub, load_pretrained, local_folder
from ..paths import first_line
from .conditioning import timestep_embedding

ARCHITECTURE_DIR = "backbone"  # in a checkpoint folder: the Hugging Face config.json of the weights
TIME_FEATURES = 256  # sinusoidal features of t fed to the time MLP


@dataclass(frozen=True)
class HFSpec:
    """What the rest of dlms reads of a backbone (the fields `TransformerSpec` shares)."""

    name: str
    vocab_size: int
    max_seq_len: int
    d_model: int
    causal: bool
    time_conditioning: bool = False
    num_classes: int = 0
    input_dim: int = 0
    token_table_dim: int = 0


# ---------------------------------------------------------------------- finding the model


@contextmanager
def quiet_loading():
    """transformers' progress bars and info messages off while a backbone is loaded."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


# How a backbone is named in error lines and how a user gets a local copy of one.
BACKBONE = Pretrained("backbone", causal_lm_copy(), point="set model.backbone=DIR (--backbone DIR)",
                      note="the built-in backbone is 'transformer'", holds="config.json and the weights")


def load_hf_config(name: str):
    """The transformers config of a backbone folder or Hub id; a one-line ConfigError if there is none."""
    from transformers import AutoConfig

    path = local_folder(name, BACKBONE)
    if path is None:
        return from_hub(lambda local: AutoConfig.from_pretrained(name, local_files_only=local), name, BACKBONE)
    if not (path / "config.json").is_file():
        raise ConfigError(f"backbone folder '{name}' holds no Hugging Face model (no config.json); pass a folder "
                          "written by model.save_pretrained(), or 'transformer' for the built-in backbone")
    try:
        return AutoConfig.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"backbone folder '{name}' has a config.json that transformers cannot read "
                          f"({first_line(exc)}); pass a folder written by model.save_pretrained()") from None


def load_pretrained_causal_lm(name: str, config) -> nn.Module:
    from transformers import AutoModelForCausalLM

    def load(source: str, local: bool):
        try:
            return AutoModelForCausalLM.from_pretrained(source, config=config, dtype=torch.float32,
                                                        attn_implementation="sdpa", local_files_only=local)
        except ValueError:  # an architecture without SDPA support
            return AutoModelForCausalLM.from_pretrained(source, config=config, dtype=torch.float32,
                                                        attn_implementation="eager", local_files_only=local)

    return load_pretrained(name, load, BACKBONE, "backbone '{name}' could not be loaded as a causal LM ({reason}); "
                           "pass a folder written by AutoModelForCausalLM.save_pretrained() (config.json and weights)")


def _build_from_config(folder: Path) -> nn.Module:
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
        try:
            return AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="sdpa")
        except ValueError:
            return AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="eager")
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"the backbone architecture saved in '{folder}' cannot be rebuilt ({first_line(exc)}); "
                          "the checkpoint is damaged or from another transformers version") from None


# ---------------------------------------------------------------------- the backbone


class HFBackbone(nn.Module):
    """A Hugging Face causal LM with the interface of the built-in `Transformer`.

    hf_model: an `AutoModelForCausalLM` model (float32). vocab_size: the tokenizer's size (the
    embeddings are resized to it; default: the model's). causal: False makes attention
    bidirectional. time_conditioning / num_classes: a time embedding / class embedding (with a
    null class `num_classes`) added to the input embeddings. input_dim > 0: `inputs_embeds` of
    that width are projected to the model's width. token_table_dim > 0: a separate token table
    `token_table` [V, token_table_dim] for a method's own use (gaussian: its diffusion space).
    """

    def __init__(self, hf_model: nn.Module, *, causal: bool, name: str = "", vocab_size: int | None = None,
                 max_seq_len: int | None = None, time_conditioning: bool = False, num_classes: int = 0,
                 input_dim: int = 0, token_table_dim: int = 0):
        super().__init__()
        config = hf_model.config
        config.is_causal = bool(causal)
        config.use_cache = False  # a cache only where a sampler asks for one (`new_cache`)
        rows = hf_model.get_input_embeddings().weight.shape[0]
        vocab = int(vocab_size or rows)
        if vocab != rows:  # added tokens (mask, pad) start at the mean embedding; unused padding rows go
            hf_model.resize_token_embeddings(vocab, mean_resizing=True)
        limit = getattr(config, "max_position_embeddings", None)
        max_len = int(max_seq_len or limit or 0)
        if not max_len:
            raise ConfigError(f"backbone '{name}' has no max_position_embeddings; set model.max_seq_len")
        if limit and max_len > limit:
            raise ConfigError(f"model.max_seq_len {max_len} exceeds backbone '{name}''s {limit} positions; "
                              "lower data.seq_len (or model.max_seq_len)")
        d_model = int(config.hidden_size)
        self.hf = hf_model
        self.spec = HFSpec(name=name, vocab_size=vocab, max_seq_len=max_len, d_model=d_model, causal=bool(causal),
                           time_conditioning=time_conditioning, num_classes=num_classes, input_dim=input_dim,
                           token_table_dim=token_table_dim)
        self.time_mlp = (nn.Sequential(nn.Linear(TIME_FEATURES, d_model), nn.SiLU(), nn.Linear(d_model, d_model))
                         if time_conditioning else None)
        self.class_embed = nn.Embedding(num_classes + 1, d_model) if num_classes > 0 else None
        self.input_proj = nn.Linear(input_dim, d_model) if input_dim > 0 else None
        self.token_table = nn.Embedding(vocab, token_table_dim) if token_table_dim > 0 else None
        with torch.no_grad():  # zero outputs: the pretrained network starts unchanged
            if self.time_mlp is not None:
                self.time_mlp[2].weight.zero_()
                self.time_mlp[2].bias.zero_()
            if self.class_embed is not None:
                self.class_embed.weight.zero_()
        # transformers 5.x renames `past_key_values` to `cache` (the old name warns, then goes in 5.40).
        forward_args = inspect.signature(hf_model.base_model.forward).parameters
        self._cache_arg = "cache" if "cache" in forward_args else "past_key_values"
        self._aliases = self._tied_aliases()
        self.register_state_dict_post_hook(_drop_aliases)
        self.register_load_state_dict_pre_hook(_fill_aliases)
        self._check_attention(name)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(cls, name: str, **options: Any) -> HFBackbone:
        """Pretrained weights from a folder or Hub id; `options` as for the constructor."""
        config = load_hf_config(name)
        with quiet_loading():
            return cls(load_pretrained_causal_lm(name, config), name=name, **options)

    @classmethod
    def from_checkpoint(cls, ckpt: str | Path, name: str, **options: Any) -> HFBackbone:
        """The architecture saved in a checkpoint folder (random weights, to be overwritten by its own)."""
        with quiet_loading():
            return cls(_build_from_config(Path(ckpt) / ARCHITECTURE_DIR), name=name, **options)

    def save_architecture(self, ckpt: str | Path) -> None:
        """Write the model's config.json to `ckpt/backbone/`: the checkpoint rebuilds itself offline."""
        self.hf.config.save_pretrained(str(Path(ckpt) / ARCHITECTURE_DIR))

    def _tied_aliases(self) -> dict[str, str]:
        """{name: name of the same tensor met first} for tied weights (e.g. lm_head = embed_tokens).

        The aliases are left out of `state_dict()` (safetensors refuses shared tensors, and one
        copy is enough) and filled back in by `load_state_dict`."""
        seen: dict[int, str] = {}
        aliases = {}
        for name, param in self.named_parameters(remove_duplicate=False):
            if id(param) in seen:
                aliases[name] = seen[id(param)]
            else:
                seen[id(param)] = name
        return aliases

    @torch.no_grad()
    def _check_attention(self, name: str) -> None:
        """Raise unless the first position sees a change of the last token exactly when bidirectional."""
        was_training = self.hf.training
        self.hf.eval()
        device = self.embed.weight.device
        try:
            first = [self.hf.base_model(input_ids=torch.tensor([[0, 1, last]], device=device), use_cache=False)
                     .last_hidden_state[0, 0].float() for last in (2, 3)]
        finally:
            self.hf.train(was_training)
        sees_future = not torch.allclose(first[0], first[1], rtol=1e-3, atol=1e-5)
        if sees_future == self.spec.causal:
            want = "causal" if self.spec.causal else "bidirectional"
            raise ConfigError(f"backbone '{name}' ({getattr(self.hf.config, 'model_type', '?')}) cannot be made {want}: "
                              "it ignores config.is_causal; use a Qwen2, Llama, Mistral or GPT-2 model, or the "
                              "'transformer' backbone")

    # ------------------------------------------------------------------ interface
    @property
    def embed(self) -> nn.Embedding:
        """The input embedding (`embed.weight` [V, D])."""
        return self.hf.get_input_embeddings()

    def get_input_embeddings(self) -> nn.Module:
        return self.hf.get_input_embeddings()

    def shard_units(self) -> list[nn.Module]:
        """The modules FSDP shards one at a time: the decoder layers, the classes the model
        declares must not be split (`_no_split_modules`, what accelerate wraps too)."""
        names = set(self.hf._no_split_modules or ())
        units = [m for m in self.hf.modules() if type(m).__name__ in names]
        if not units:
            raise ConfigError(f"backbone '{self.spec.name}' declares no layers to shard (_no_split_modules); "
                              "train it with train.parallel=ddp")
        return units

    def enable_activation_checkpointing(self) -> None:
        """Training forwards keep only each layer's input and recompute the layer in backward."""
        options = {"use_reentrant": False}  # recomputes through FSDP's hooks; the reentrant form cannot
        if hasattr(self.hf, "activation_checkpointing_enable"):  # transformers 5.2x; the older name warns there
            self.hf.activation_checkpointing_enable(activation_checkpointing_kwargs=options)
        else:
            self.hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs=options)

    @property
    def null_class(self) -> int:
        return self.spec.num_classes

    # Window-at-a-time decoding of a bidirectional model needs keys and values written into the
    # middle of a cache; Hugging Face caches only append, so a masked sampler's `cache` option
    # is refused here (block decoding without a cache still works).
    supports_canvas_cache = False

    def new_cache(self, batch: int, max_len: int, device: torch.device, dtype: torch.dtype):
        """A Hugging Face `DynamicCache` for left-to-right decoding (causal backbones only)."""
        if not self.spec.causal:
            raise ValueError("a KV cache needs a causal backbone; this one is bidirectional")
        from transformers import DynamicCache

        return DynamicCache(config=self.hf.config)

    def _condition(self, time: torch.Tensor | None, labels: torch.Tensor | None, batch: int,
                   like: torch.Tensor) -> torch.Tensor | None:
        """time [B] (or a scalar) and labels [B] -> an offset [B, 1, D] for every position, or None."""
        if labels is not None and self.class_embed is None:
            raise ValueError("labels were given but this backbone has no class conditioning (model.num_classes=0)")
        cond = None
        if time is not None and self.time_mlp is not None:
            t = torch.as_tensor(time, device=like.device).float().reshape(-1).expand(batch)
            weight = self.time_mlp[0].weight
            cond = self.time_mlp(timestep_embedding(t, TIME_FEATURES).to(weight.dtype))
        if self.class_embed is not None:
            if labels is None:
                labels = torch.full((batch,), self.null_class, device=like.device, dtype=torch.long)
            label_term = self.class_embed(labels)
            cond = label_term if cond is None else cond + label_term
        return None if cond is None else cond[:, None, :].to(like.dtype)

    def hidden(self, input_ids: torch.Tensor | None = None, *, inputs_embeds: torch.Tensor | None = None,
               time: torch.Tensor | None = None, labels: torch.Tensor | None = None, cache=None) -> torch.Tensor:
        """input_ids [B, L] (or inputs_embeds [B, L, D or input_dim]), time [B] in [0, 1], labels [B]
        -> hidden [B, L, D] (after the model's final norm).

        With a `cache` (from `new_cache`) the tokens are placed after the cached ones.
        """
        embed = self.hf.get_input_embeddings()
        if inputs_embeds is None:
            if input_ids is None:
                raise ValueError("pass input_ids [B, L] or inputs_embeds [B, L, D]")
            x = embed(input_ids)
        else:
            x = inputs_embeds
            if x.shape[-1] != self.spec.d_model:
                if self.input_proj is None or x.shape[-1] != self.spec.input_dim:
                    raise ValueError(f"inputs_embeds have width {x.shape[-1]}, but the backbone takes {self.spec.d_model}"
                                     + (f" or {self.spec.input_dim}" if self.input_proj is not None else "")
                                     + " (set model.input_dim for another width)")
                x = self.input_proj(x.to(self.input_proj.weight.dtype))
            if not torch.is_autocast_enabled(x.device.type):
                x = x.to(embed.weight.dtype)
        offset = self._condition(time, labels, x.shape[0], x)
        if offset is not None:
            x = x + offset
        out = self.hf.base_model(inputs_embeds=x, use_cache=cache is not None, **{self._cache_arg: cache})
        return out.last_hidden_state

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [..., D] -> logits [..., V] through the model's own output head."""
        return self.hf.get_output_embeddings()(hidden)

    def forward(self, input_ids: torch.Tensor | None = None, *, select: torch.Tensor | None = None,
                **kwargs) -> torch.Tensor:
        """Logits [B, L, V], or [M, V] at the positions where `select` [B, L] is True (the
        vocabulary projection is skipped elsewhere). See `hidden` for the other arguments."""
        hidden = self.hidden(input_ids, **kwargs)
        return self.logits(hidden if select is None else hidden[select])


def _drop_aliases(module: HFBackbone, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    for alias in module._aliases:
        state_dict.pop(prefix + alias, None)


def _fill_aliases(module: HFBackbone, state_dict: dict, prefix: str, *_: Any) -> None:
    for alias, source in module._aliases.items():
        if prefix + alias not in state_dict and prefix + source in state_dict:
            state_dict[prefix + alias] = state_dict[prefix + source]


# ---------------------------------------------------------------------- from the config

_SIZES = ("d_model", "n_layers", "n_heads", "mlp_hidden")


def resolve_hf_model_config(cfg: ModelConfig, seq_len: int, causal: bool) -> ModelConfig:
    """`max_seq_len` from the data and `causal` from the method; the sizes are the pretrained model's.
    A backbone that cannot be found (a typo, an unreachable Hub id) is a one-line ConfigError."""
    load_hf_config(cfg.backbone)
    sized = [k for k in _SIZES if getattr(cfg, k) is not None]
    if sized:
        raise ConfigError(f"model.{sized[0]} cannot be set with the pretrained backbone '{cfg.backbone}': its sizes "
                          "come from its own config; leave it null")
    for option in ("skip_connections", "dropout", "attention_dropout", "embedding_dropout"):
        if getattr(cfg, option, False):
            raise ConfigError(f"model.{option} is an option of the built-in backbone, not of '{cfg.backbone}' "
                              f"(a pretrained model keeps its own); leave it at its default")
    max_len = cfg.max_seq_len or seq_len
    if max_len < seq_len:
        raise ConfigError(f"model.max_seq_len {max_len} is shorter than data.seq_len {seq_len}; raise it or leave it null")
    if cfg.causal is not None and cfg.causal != causal:
        raise ConfigError(f"model.causal={cfg.causal} does not suit this method (it needs causal={causal}); leave it null")
    return replace(cfg, max_seq_len=max_len, causal=causal)


def build_hf_backbone(cfg: ModelConfig, vocab_size: int, checkpoint: str | Path | None = None) -> HFBackbone:
    """The backbone of a resolved ModelConfig: pretrained weights, or the architecture saved in
    `checkpoint` (whose own weights are loaded next) when it has one."""
    options = {"causal": bool(cfg.causal), "vocab_size": vocab_size, "max_seq_len": cfg.max_seq_len,
               "time_conditioning": cfg.time_conditioning, "num_classes": cfg.num_classes,
               "input_dim": int(getattr(cfg, "input_dim", 0) or 0),
               "token_table_dim": int(getattr(cfg, "token_table_dim", 0) or 0)}
    if checkpoint is not None and (Path(checkpoint) / ARCHITECTURE_DIR / "config.json").is_file():
        return HFBackbone.from_checkpoint(checkpoint, cfg.backbone, **options)
    return HFBackbone.from_pretrained(cfg.backbone, **options)
