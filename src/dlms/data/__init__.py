"""The data layer: raw text -> tokenizer -> cached token arrays -> batches.

    from dlms.data import DatasetBuilder, BatchIterator
    ds = DatasetBuilder(seq_len=128, layout="packed").build_from_raw("corpus.txt", vocab=4096)
    batches = BatchIterator(ds.train, batch_size=32)

Names are imported on first use (PEP 562) so `import dlms.data` does not pull in torch or
transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "DatasetBuilder": "dlms.data.builder",
    "TokenizedDataset": "dlms.data.tokenized",
    "TokenSplit": "dlms.data.tokenized",
    "BatchIterator": "dlms.data.loader",
    "eval_batches": "dlms.data.loader",
    "train_bpe_tokenizer": "dlms.data.tokenizer",
    "load_tokenizer": "dlms.data.tokenizer",
    "special_ids": "dlms.data.tokenizer",
    "read_examples": "dlms.data.sources",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from dlms.data.builder import DatasetBuilder
    from dlms.data.tokenized import TokenizedDataset, TokenSplit
    from dlms.data.loader import BatchIterator, eval_batches
    from dlms.data.sources import read_examples
    from dlms.data.tokenizer import load_tokenizer, special_ids, train_bpe_tokenizer


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dlms.data' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
