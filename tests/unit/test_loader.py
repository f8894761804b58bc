"""Training batches (shuffled, sharded, resumable) and evaluation batches."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dlms.data.builder import DatasetBuilder
from dlms.data.tokenized import TokenSplit
from dlms.data.loader import BatchIterator, eval_batches
from dlms.errors import DataError


def make_split(n: int = 50, seq_len: int = 6) -> TokenSplit:
    """Row i is [i, i, ...] and has labels [i % 3, i % 2], so every batch row is identifiable."""
    ids = np.repeat(np.arange(n, dtype=np.int32)[:, None], seq_len, axis=1)
    labels = np.stack([np.arange(n) % 3, np.arange(n) % 2], axis=1).astype(np.int64)
    return TokenSplit(ids=ids, labels=labels, label_columns=["topic", "mood"], pad_id=0)


def rows_of(batch) -> list[int]:
    return batch["input_ids"][:, 0].tolist()


def test_batch_shapes_and_dtypes():
    it = BatchIterator(make_split(), batch_size=8, label_column="mood")
    batch = next(it)
    assert batch["input_ids"].shape == (8, 6) and batch["input_ids"].dtype == torch.long
    assert batch["labels"].shape == (8,) and batch["labels"].dtype == torch.long
    assert batch["labels"].tolist() == [r % 2 for r in rows_of(batch)]
    assert next(BatchIterator(make_split(), batch_size=8))["labels"] is None
    assert it.steps_per_epoch == 6  # 50 // 8, last partial batch dropped


def test_every_row_seen_once_per_epoch_and_epochs_reshuffle():
    it = BatchIterator(make_split(48), batch_size=8, seed=3)
    epochs = []
    for _ in range(2):
        seen = [r for _ in range(it.steps_per_epoch) for r in rows_of(next(it))]
        assert sorted(seen) == list(range(48))
        epochs.append(seen)
    assert epochs[0] != epochs[1]
    next(it)
    assert it.epoch == 2


def test_epoch_order_is_the_documented_permutation():
    it = BatchIterator(make_split(40), batch_size=10, seed=7)
    perm = np.random.default_rng([7, 0]).permutation(40)
    assert [r for _ in range(4) for r in rows_of(next(it))] == perm.tolist()


def test_two_ranks_partition_an_epoch():
    split = make_split(41)
    ranks = [BatchIterator(split, batch_size=5, seed=1, rank=r, world_size=2) for r in range(2)]
    assert ranks[0].steps_per_epoch == ranks[1].steps_per_epoch == 4  # 20 rows per rank
    seen = [{r for _ in range(4) for r in rows_of(next(it))} for it in ranks]
    assert not seen[0] & seen[1]
    assert len(seen[0]) == len(seen[1]) == 20


def test_resume_yields_exactly_the_same_batches():
    split = make_split(30)
    original = BatchIterator(split, batch_size=4, seed=5, label_column="topic")
    for _ in range(9):  # past the end of epoch 0 (7 steps per epoch)
        next(original)
    state = json.loads(json.dumps(original.state_dict()))
    assert state == {"epoch": 1, "position": 2}
    resumed = BatchIterator(split, batch_size=4, seed=5, label_column="topic")
    resumed.load_state_dict(state)
    for _ in range(12):  # crosses another epoch boundary
        a, b = next(original), next(resumed)
        assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])
    assert resumed.state_dict() == original.state_dict()


def test_resume_at_end_of_epoch():
    split = make_split(12)
    original = BatchIterator(split, batch_size=4)
    for _ in range(3):
        next(original)
    resumed = BatchIterator(split, batch_size=4)
    resumed.load_state_dict(original.state_dict())
    assert rows_of(next(resumed)) == rows_of(next(original))
    assert resumed.epoch == 1


def test_bad_state_is_rejected():
    it = BatchIterator(make_split(12), batch_size=4)
    with pytest.raises(DataError, match="batch size"):
        it.load_state_dict({"epoch": 0, "position": 99})


def test_too_few_rows_is_a_data_error():
    with pytest.raises(DataError, match="lower the batch size or add data"):
        BatchIterator(make_split(10), batch_size=4, world_size=3)


def test_unknown_label_column_is_a_data_error():
    with pytest.raises(DataError, match="label column 'colour'"):
        BatchIterator(make_split(), batch_size=4, label_column="colour")
    no_labels = TokenSplit(ids=np.zeros((8, 4), dtype=np.int32))
    with pytest.raises(DataError, match="layout='padded'"):
        list(eval_batches(no_labels, 4, label_column="topic"))


def test_eval_batches_in_order_with_partial_last_batch():
    split = make_split(10)
    batches = list(eval_batches(split, 4, label_column="topic"))
    assert [rows_of(b) for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert batches[2]["labels"].tolist() == [8 % 3, 9 % 3]
    assert len(list(eval_batches(split, 4, max_batches=2))) == 2


def test_iterates_a_built_memmapped_dataset(tmp_path):
    f = tmp_path / "c.txt"
    f.write_text("".join(f"line {i} of the corpus\n" for i in range(40)), encoding="utf-8")
    ds = DatasetBuilder(seq_len=8, layout="packed", cache_dir=str(tmp_path / "cache")).build_from_raw(str(f), 280)
    it = BatchIterator(ds.train, batch_size=4)
    batch = next(it)
    assert batch["input_ids"].shape == (4, 8)
    assert batch["input_ids"].max() < len(ds.tokenizer)
