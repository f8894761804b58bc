"""Tiny built-in transformers and inputs shared by the backbone tests."""
from __future__ import annotations

import torch

from dlms.backbones import build_backbone, resolve_model_config
from dlms.config import ModelConfig

V = 37  # vocabulary
L = 10  # sequence length


def tiny(causal: bool = False, seed: int = 0, **kwargs) -> torch.nn.Module:
    """The `tiny` preset (eval mode), built from a seed; `kwargs` go to ModelConfig."""
    torch.manual_seed(seed)
    cfg = resolve_model_config(ModelConfig(preset="tiny", **kwargs), seq_len=L, causal=causal)
    return build_backbone(cfg, V).eval()


def ids(batch: int = 2, length: int = L, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, V, (batch, length), generator=g)


def perturb_modulation(model: torch.nn.Module, seed: int = 3) -> None:
    """Conditioning layers start at zero (identity blocks); give them weights so that time and
    labels change the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "modulation" in name:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))


def plain_tokenizer(texts: list[str]):
    """A GPT-2 style tokenizer trained on `texts`: byte-level BPE (300 tokens) whose only special
    token is <|endoftext|> (no pad, no mask: the loaders must add them)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>", bos_token="<|endoftext|>")


class NoEnds(torch.nn.Module):
    """A backbone that never predicts the end-of-text or padding tokens: for sampler tests that
    count steps over the whole canvas (masked samplers end a text, and hold ends back, when an
    end is predicted)."""

    def __init__(self, inner: torch.nn.Module, special):
        super().__init__()
        self.inner = inner
        self.ends = [special.eos, special.pad]
        self.spec = inner.spec
        self.supports_canvas_cache = getattr(inner, "supports_canvas_cache", False)

    @property
    def null_class(self) -> int:
        return self.inner.null_class

    def new_canvas_cache(self, *args, **kwargs):
        return self.inner.new_canvas_cache(*args, **kwargs)

    def hidden(self, *args, **kwargs):
        return self.inner.hidden(*args, **kwargs)

    def forward(self, *args, **kwargs):
        out = self.inner(*args, **kwargs).clone()
        out[..., self.ends] = float("-inf")
        return out


CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def chat_tokenizer(texts: list[str], template: str = CHAT_TEMPLATE, bos: str | None = None):
    """A tiny Qwen-like tokenizer trained on `texts`: byte-level BPE (300 tokens), <|endoftext|> as
    eos and pad, no bos (unless `bos` names one), <|im_start|> and <|im_end|> special, and a chat
    template (ChatML, as Qwen's; the loaders must add pad, mask and sep)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *([bos] if bos else [])]
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                        bos_token=bos, additional_special_tokens=["<|im_start|>", "<|im_end|>"],
                                        clean_up_tokenization_spaces=False)
    tokenizer.chat_template = template
    return tokenizer


def save_tiny_qwen(folder, tokenizer, *, max_positions: int = 64, extra_rows: int = 0):
    """A folder like a downloaded Qwen2 (config.json, weights, `tokenizer`): 2 layers of width 32,
    `extra_rows` embedding rows past the tokenizer's (as Qwen's padding rows). -> the folder."""
    from transformers import AutoModelForCausalLM, Qwen2Config

    config = Qwen2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=1, vocab_size=len(tokenizer) + extra_rows,
                         max_position_embeddings=max_positions, tie_word_embeddings=True)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder
