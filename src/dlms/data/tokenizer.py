"""Tokenizers: train a byte-level BPE, load a pretrained one, and read its special ids.

Every tokenizer the framework uses is a Hugging Face tokenizer that has four distinct-purpose
special tokens: pad, bos, eos and mask (bos may equal eos, as in GPT-2). `load_tokenizer` and
`ensure_special_tokens` add whichever are missing, so any model can rely on them.

`transformers` is imported inside the functions so that `import dlms.data` stays fast.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlms.errors import ConfigError, DataError
from dlms.hub import Pretrained, load_pretrained
from dlms.paths import first_line

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

PAD, BOS, EOS, MASK = "<pad>", "<bos>", "<eos>", "<mask>"
# Order fixes the ids: <pad>=0, <bos>=1, <eos>=2, <mask>=3.
SPECIAL_TOKENS = [PAD, BOS, EOS, MASK]
# 256 byte symbols + 4 special tokens: a byte-level BPE cannot be smaller.
MIN_BPE_VOCAB = 256 + len(SPECIAL_TOKENS)
# How a tokenizer is named in error lines and how a user gets a local copy of one.
TOKENIZER = Pretrained("tokenizer", "AutoTokenizer.from_pretrained('{name}').save_pretrained('DIR')", error=DataError)


def _streamed(texts: Iterable[str]) -> Iterator[str]:
    """Yield texts one at a time, checking their type (the trainer needs str)."""
    for text in texts:
        if not isinstance(text, str):
            raise DataError(f"tokenizer training got a {type(text).__name__} instead of text; pass strings")
        yield text


def train_bpe_tokenizer(
    texts: Iterable[str], vocab_size: int, out_dir: str | Path | None = None
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on `texts` (streamed, so it may be larger than memory).

    The vocabulary holds `<pad>`, `<bos>`, `<eos>`, `<mask>` (ids 0..3), the 256 byte symbols and
    up to `vocab_size - 260` merges; a small corpus may give fewer. Decoding is lossless:
    `decode(encode(x)) == x` for any string. If `out_dir` is given the tokenizer is written there
    with `save_pretrained`, so `AutoTokenizer.from_pretrained(out_dir)` restores it.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool) or vocab_size < MIN_BPE_VOCAB:
        raise ConfigError(
            f"BPE vocab size {vocab_size!r} is too small; use an integer >= {MIN_BPE_VOCAB} "
            "(256 bytes + 4 special tokens)"
        )
    backend = Tokenizer(models.BPE())
    # No prefix space: it would add a space to every document and break exact round trips.
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        # Seed all 256 bytes so any unseen character still encodes (no unknown token needed).
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_streamed(texts), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        mask_token=MASK,
        clean_up_tokenization_spaces=False,
    )
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        tokenizer.save_pretrained(str(out_dir))
    return tokenizer


def load_tokenizer(name_or_path: str) -> PreTrainedTokenizerFast:
    """Load a tokenizer by local folder, `tokenizer.json` file, or Hugging Face Hub name.

    Missing special tokens are added (see `ensure_special_tokens`). A Hub name is first looked up
    in the local Hugging Face cache and only then online; if neither works a one-line `DataError`
    says how to get a local copy.
    """
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    name = str(name_or_path)
    path = Path(name).expanduser()
    if path.is_file():  # a tokenizer.json on its own; anything else goes by the shared policy
        if path.suffix != ".json":
            raise DataError(
                f"tokenizer path '{name}' is a file but not a tokenizer.json; pass the tokenizer's folder"
            )
        try:
            tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(path), clean_up_tokenization_spaces=False)
        except Exception as exc:
            raise DataError(
                f"could not read tokenizer file '{name}' ({first_line(exc)}); pass a tokenizer.json"
            ) from None
    else:
        tokenizer = load_pretrained(
            name, lambda source, local: AutoTokenizer.from_pretrained(source, local_files_only=local), TOKENIZER,
            "could not load a tokenizer from folder '{name}' ({reason}); pass a folder written by "
            "tokenizer.save_pretrained() (with tokenizer.json or tokenizer_config.json)")
    ensure_special_tokens(tokenizer)
    return tokenizer


def ensure_special_tokens(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Add missing special tokens to `tokenizer` in place and return it.

    - eos missing: add `<eos>`;
    - bos missing: reuse eos (GPT-2 style);
    - pad missing or equal to eos: add `<pad>` (padding must be distinguishable from text ends);
    - mask missing or shared with pad/bos/eos: add `<mask>` (masked diffusion needs its own id).
    """
    to_add: dict[str, Any] = {}
    if tokenizer.eos_token is None:
        to_add["eos_token"] = EOS
    if to_add:
        tokenizer.add_special_tokens(to_add)
        to_add = {}
    if tokenizer.bos_token is None:
        tokenizer.bos_token = tokenizer.eos_token
    if tokenizer.pad_token is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        to_add["pad_token"] = PAD
    taken = {tokenizer.eos_token_id, tokenizer.bos_token_id}
    if "pad_token" not in to_add:
        taken.add(tokenizer.pad_token_id)
    if tokenizer.mask_token is None or tokenizer.mask_token_id in taken:
        to_add["mask_token"] = MASK
    if to_add:
        tokenizer.add_special_tokens(to_add)
    ids = special_ids(tokenizer)
    if len({ids["pad"], ids["eos"], ids["mask"]}) != 3 or ids["mask"] == ids["bos"] or ids["pad"] == ids["bos"]:
        raise DataError(
            f"tokenizer special tokens collide (pad={ids['pad']}, bos={ids['bos']}, eos={ids['eos']}, "
            f"mask={ids['mask']}); give the tokenizer distinct pad, eos and mask tokens"
        )
    return tokenizer


def special_ids(tokenizer: PreTrainedTokenizerBase) -> dict[str, int]:
    """Return `{"pad", "bos", "eos", "mask", "vocab_size"}`; vocab_size = len(tokenizer) (incl. added tokens).
    A tokenizer with a separator token (prompt/response data, see prompt_response.py) adds "sep"."""
    ids = {
        "pad": tokenizer.pad_token_id,
        "bos": tokenizer.bos_token_id,
        "eos": tokenizer.eos_token_id,
        "mask": tokenizer.mask_token_id,
        "vocab_size": len(tokenizer),
    }
    if getattr(tokenizer, "sep_token_id", None) is not None:  # absent otherwise: cache keys of other tokenizers stay
        ids["sep"] = tokenizer.sep_token_id
    return ids


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """A string that changes whenever the tokenizer would encode differently (for cache keys)."""
    import hashlib
    import json

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        body = backend.to_str()
    else:  # a slow (pure Python) tokenizer: its vocabulary and class are the best proxy
        body = json.dumps([type(tokenizer).__name__, sorted(tokenizer.get_vocab().items())])
    extra = json.dumps(special_ids(tokenizer), sort_keys=True)
    return hashlib.sha256((body + extra).encode("utf-8")).hexdigest()


def encode_texts(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> list[list[int]]:
    """Encode a batch of texts without adding special tokens.

    Special-token strings that occur in the raw text (e.g. a literal "<eos>") are encoded as
    ordinary text, so data can never forge a pad/eos/mask id.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        old = backend.encode_special_tokens
        backend.encode_special_tokens = True
        try:
            # The Rust batch encoder runs in parallel; much faster than the Python wrapper.
            return [enc.ids for enc in backend.encode_batch(texts, add_special_tokens=False)]
        finally:
            backend.encode_special_tokens = old
    out = tokenizer(texts, add_special_tokens=False, split_special_tokens=True)
    return list(out["input_ids"])
