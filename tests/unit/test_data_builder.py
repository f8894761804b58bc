"""Reading raw data (sources.py) and building cached token arrays (builder.py, cache.py)."""

from __future__ import annotations

import csv
import inspect
import json
import math

import numpy as np
import pytest

from dlms.data import auto_length
from dlms.data import builder as builder_mod
from dlms.data.builder import DatasetBuilder
from dlms.data.tokenized import TokenizedDataset
from dlms.data.sources import content_fingerprint, read_examples
from dlms.errors import ConfigError, DataError

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()


def make_docs(n: int) -> list[str]:
    """n distinct short documents, each starting with its index (so rows are traceable)."""
    return [f"doc{i} " + " ".join(WORDS[(i + j) % len(WORDS)] for j in range(3 + i % 5)) for i in range(n)]


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def texts(path, **kw):
    return [ex["text"] for ex in read_examples(str(path), **kw)]


# ---------------------------------------------------------------------------------------------
# sources


def test_txt_one_example_per_line(tmp_path):
    f = write_lines(tmp_path / "a.txt", ["", "first line", "second line", "", ""])  # edge blanks only
    assert texts(f) == ["first line", "second line"]


def test_txt_blank_lines_separate_documents(tmp_path):
    f = write_lines(tmp_path / "a.txt", ["doc one line a", "doc one line b", "", "  ", "doc two", "", "doc three"])
    assert texts(f) == ["doc one line a\ndoc one line b", "doc two", "doc three"]


def test_jsonl_with_labels(tmp_path):
    rows = [{"body": "good film", "sent": "pos", "n": 1}, {"body": "bad film", "sent": None, "n": 2}]
    f = tmp_path / "d.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    out = list(read_examples(str(f), text_column="body", label_columns=["sent", "n"]))
    assert out == [
        {"text": "good film", "labels": {"sent": "pos", "n": "1"}},
        {"text": "bad film", "labels": {"sent": None, "n": "2"}},
    ]


@pytest.mark.parametrize("ext,delim", [(".csv", ","), (".tsv", "\t")])
def test_csv_and_tsv_with_labels(tmp_path, ext, delim):
    f = tmp_path / f"d{ext}"
    with f.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, delimiter=delim)
        w.writerow(["id", "text", "topic"])
        w.writerow(["1", "has, a comma\nand a newline", "news"])
        w.writerow(["2", "plain", "sport"])
    out = list(read_examples(str(f), label_columns=["topic"]))
    assert [ex["text"] for ex in out] == ["has, a comma\nand a newline", "plain"]
    assert [ex["labels"]["topic"] for ex in out] == ["news", "sport"]


def test_folder_is_read_recursively_in_sorted_order(tmp_path):
    write_lines(tmp_path / "b.txt", ["from b"])
    (tmp_path / "a").mkdir()
    write_lines(tmp_path / "a" / "z.txt", ["from a/z"])
    (tmp_path / "c.jsonl").write_text(json.dumps({"text": "from c"}) + "\n", encoding="utf-8")
    (tmp_path / "notes.md").write_text("skipped", encoding="utf-8")
    write_lines(tmp_path / ".hidden.txt", ["skipped too"])
    assert texts(tmp_path) == ["from a/z", "from b", "from c"]


def test_hf_save_to_disk_folders(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"text": ["one", "two", "three"], "label": ["a", "b", "a"]})
    ds.save_to_disk(str(tmp_path / "single"))
    out = list(read_examples(str(tmp_path / "single"), label_columns=["label"]))
    assert [(e["text"], e["labels"]["label"]) for e in out] == [("one", "a"), ("two", "b"), ("three", "a")]
    other = datasets.Dataset.from_dict({"text": ["test row"], "label": ["c"]})
    datasets.DatasetDict({"test": other, "train": ds}).save_to_disk(str(tmp_path / "dict"))
    assert texts(tmp_path / "dict") == ["one", "two", "three"]  # the "train" split
    with pytest.raises(DataError, match="text column 'body'.*label"):
        read_examples(str(tmp_path / "single"), text_column="body")


def test_max_examples_keeps_the_first_n(tmp_path):
    f = write_lines(tmp_path / "a.txt", make_docs(10))
    assert texts(f, max_examples=3) == make_docs(3)


def test_builtin_source_has_labels():
    pytest.importorskip("dlms.data.corpus")
    out = list(read_examples("builtin:12", label_columns=["sentiment", "topic"], seed=1))
    assert len(out) == 12 and all(ex["text"] for ex in out)
    assert {ex["labels"]["sentiment"] for ex in out} <= {"negative", "positive"}
    with pytest.raises(DataError, match="label column 'colour'"):
        read_examples("builtin:3", label_columns=["colour"])


def _one_line_error(fn, match):
    with pytest.raises(DataError, match=match) as err:
        fn()
    assert "\n" not in str(err.value)
    return str(err.value)


def test_source_errors_are_one_line_and_name_the_path(tmp_path):
    missing = str(tmp_path / "nope.txt")
    assert missing in _one_line_error(lambda: read_examples(missing), "does not exist")
    (tmp_path / "empty.txt").write_bytes(b"")
    _one_line_error(lambda: read_examples(str(tmp_path / "empty.txt")), "empty")
    write_lines(tmp_path / "blank.txt", ["", "   ", ""])
    _one_line_error(lambda: read_examples(str(tmp_path / "blank.txt")), "no examples found")
    (tmp_path / "x.txt").write_bytes(b"text\x00\x01\x02binary")
    _one_line_error(lambda: read_examples(str(tmp_path / "x.txt")), "x.txt' is not UTF-8 text")
    (tmp_path / "latin.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    _one_line_error(lambda: read_examples(str(tmp_path / "latin.txt")), "not UTF-8 text")
    (tmp_path / "x.bin").write_bytes(b"abc")
    _one_line_error(lambda: read_examples(str(tmp_path / "x.bin")), "unsupported extension")
    (tmp_path / "empty_dir").mkdir()
    _one_line_error(lambda: read_examples(str(tmp_path / "empty_dir")), "no .txt")


def test_missing_columns_are_reported_with_the_available_ones(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text(json.dumps({"content": "x", "stars": 5}) + "\n", encoding="utf-8")
    msg = _one_line_error(lambda: read_examples(str(f)), "text column 'text'")
    assert "content" in msg and "stars" in msg
    g = tmp_path / "d.csv"
    g.write_text("text,stars\nhello,5\n", encoding="utf-8")
    msg = _one_line_error(lambda: read_examples(str(g), label_columns=["genre"]), "label column 'genre'")
    assert "text, stars" in msg


def test_content_fingerprint_tracks_content(tmp_path):
    f = write_lines(tmp_path / "a.txt", ["one", "two"])
    first = content_fingerprint(str(f))
    assert content_fingerprint(str(f)) == first
    write_lines(f, ["one", "three"])
    assert content_fingerprint(str(f)) != first


# ---------------------------------------------------------------------------------------------
# builder


@pytest.fixture
def corpus(tmp_path):
    return write_lines(tmp_path / "corpus.txt", make_docs(60))


def builder(tmp_path, **kw):
    kw.setdefault("cache_dir", str(tmp_path / "cache"))
    return DatasetBuilder(**kw)


def test_padded_rows_are_bos_tokens_eos_pad(tmp_path, corpus):
    ds = builder(tmp_path, seq_len=48, layout="padded", val_fraction=0.1).build_from_raw(str(corpus), 300)
    sp = ds.special_ids
    assert ds.train.ids.dtype == np.int32 and ds.train.ids.shape == (54, 48) and len(ds.val) == 6
    assert ds.meta["splits"]["train"]["truncated"] == 0
    for row in np.asarray(ds.train.ids):
        assert row[0] == sp["bos"]
        end = list(row).index(sp["eos"])
        assert (row[end + 1 :] == sp["pad"]).all() and (row[1:end] > 3).all()
    assert ds.train.texts(ds.tokenizer, 2) == make_docs(2)
    assert ds.train.num_tokens == int((np.asarray(ds.train.ids) != sp["pad"]).sum())
    assert ds.train.labels is None


def test_padded_truncation_is_counted(tmp_path, corpus):
    ds = builder(tmp_path, seq_len=4, layout="padded", val_fraction=0.1).build_from_raw(str(corpus), 300)
    assert ds.meta["splits"]["train"]["truncated"] > 0
    assert (np.asarray(ds.train.ids)[:, 0] == ds.special_ids["bos"]).all()


def test_packed_blocks_concatenate_documents_with_eos(tmp_path, corpus):
    ds = builder(tmp_path, seq_len=8, layout="packed", val_fraction=0.1).build_from_raw(str(corpus), 300)
    tok, eos = ds.tokenizer, ds.special_ids["eos"]
    stream = []
    for doc in make_docs(54):  # tail split: the first 54 documents are training
        stream += tok.encode(doc, add_special_tokens=False) + [eos]
    n = len(stream) // 8
    assert ds.train.ids.shape == (n, 8)
    assert np.asarray(ds.train.ids).ravel().tolist() == stream[: n * 8]
    assert (np.asarray(ds.train.ids) == eos).sum() >= 50 and ds.train.labels is None
    assert ds.train.num_tokens == n * 8


def test_packed_layout_with_labels_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="layout='padded'"):
        builder(tmp_path, layout="packed", label_columns=["topic"])


def _val_docs(ds):
    """Decoded validation documents of a padded dataset (one per row)."""
    return ds.tokenizer.batch_decode(np.asarray(ds.val.ids).tolist(), skip_special_tokens=True)


def test_split_is_deterministic_and_by_document(tmp_path, corpus):
    docs = make_docs(60)
    tail = builder(tmp_path, seq_len=32, layout="padded", val_fraction=0.1).build_from_raw(str(corpus), 300)
    assert _val_docs(tail) == docs[-6:]
    rnd = [
        builder(tmp_path, seq_len=32, layout="padded", val_fraction=0.1, split="random", seed=s, use_cache=False)
        .build_from_raw(str(corpus), 300)
        for s in (1, 1, 2)
    ]
    val = [_val_docs(d) for d in rnd]
    assert val[0] == val[1] != val[2] and len(val[0]) == 6
    train = set(rnd[0].train.texts(rnd[0].tokenizer, len(rnd[0].train)))
    assert not train & set(val[0]) and len(train) == 54


def test_max_examples_limits_documents(tmp_path, corpus):
    b = builder(tmp_path, seq_len=32, layout="padded", val_fraction=0.25, max_examples=20)
    ds = b.build_from_raw(str(corpus), 300)
    assert len(ds.train) == 15 and len(ds.val) == 5
    assert _val_docs(ds) == make_docs(20)[-5:]


def test_bpe_is_trained_on_the_training_split_only(tmp_path):
    docs = make_docs(40) + ["xylophonequartz " * 30] * 4  # a word seen only in validation (the tail)
    f = write_lines(tmp_path / "c.txt", docs)
    ds = builder(tmp_path, seq_len=16, layout="padded", val_fraction=0.1).build_from_raw(str(f), 400)
    assert len(ds.tokenizer.encode("xylophonequartz", add_special_tokens=False)) > 3


def test_labels_are_mapped_by_sorted_training_values(tmp_path):
    rows = [{"text": f"t{i}", "topic": ["news", "art", "sport"][i % 3], "mood": "ok"} for i in range(18)]
    rows += [{"text": "val-only", "topic": "unseen", "mood": None}]
    f = tmp_path / "d.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    b = builder(tmp_path, seq_len=8, layout="padded", val_fraction=0.05, label_columns=["topic", "mood"])
    ds = b.build_from_raw(str(f), 300)
    assert ds.label_names == {"topic": ["art", "news", "sport"], "mood": ["ok"]}
    assert ds.train.labels.dtype == np.int64 and ds.train.labels.shape == (18, 2)
    assert ds.train.labels[:3, 0].tolist() == [1, 0, 2] and (ds.train.labels[:, 1] == 0).all()
    assert ds.val.labels.tolist() == [[-1, -1]]  # unseen value and missing value
    assert ds.meta["label_names"] == ds.label_names


def test_builtin_build_uses_corpus_label_order(tmp_path):
    corpus_mod = pytest.importorskip("dlms.data.corpus")
    b = builder(tmp_path, seq_len=48, layout="padded", label_columns=["topic"], builtin_examples=200)
    ds = b.build_from_raw("builtin", 320)
    assert ds.label_names == {"topic": list(corpus_mod.LABELS["topic"])}
    assert len(ds.train) + len(ds.val) == 200 and ds.train.labels.min() >= 0


def test_second_build_loads_from_cache_without_tokenizing(tmp_path, corpus, monkeypatch):
    b = builder(tmp_path, seq_len=16, layout="packed", val_fraction=0.1)
    first = b.build_from_raw(str(corpus), 300)
    assert not first.from_cache

    def boom(*a, **k):
        raise AssertionError("cache miss: re-tokenized or retrained")

    monkeypatch.setattr(builder_mod, "encode_texts", boom)
    monkeypatch.setattr(builder_mod, "train_bpe_tokenizer", boom)
    second = b.build_from_raw(str(corpus), 300)
    assert second.from_cache and second.cache_path == first.cache_path
    assert isinstance(second.train.ids, np.memmap)
    assert np.array_equal(second.train.ids, first.train.ids) and np.array_equal(second.val.ids, first.val.ids)
    assert second.tokenizer.encode("alpha beta") == first.tokenizer.encode("alpha beta")
    # Files of the cache entry; no temporary folders left behind.
    names = {p.name for p in first.cache_path.iterdir()}
    assert {"train_ids.npy", "val_ids.npy", "meta.json", "tokenizer"} <= names
    assert first.cache_path.parent == tmp_path / "cache" / "datasets"
    assert not [p for p in first.cache_path.parent.iterdir() if p.name.startswith(".")]
    # A changed seq_len is a new entry, but the BPE trained for this split is reused.
    monkeypatch.undo()
    monkeypatch.setattr(builder_mod, "train_bpe_tokenizer", boom)
    third = b.build_from_raw(str(corpus), 300, seq_len=12)
    assert not third.from_cache and third.train.ids.shape[1] == 12


def test_changed_data_misses_the_cache(tmp_path, corpus):
    b = builder(tmp_path, seq_len=16, layout="padded", val_fraction=0.1)
    first = b.build_from_raw(str(corpus), 300)
    write_lines(corpus, make_docs(61))
    second = b.build_from_raw(str(corpus), 300)
    assert not second.from_cache and len(second.train) + len(second.val) == 61
    assert TokenizedDataset.load(first.cache_path).meta["key"] != second.meta["key"]


def test_tokenizer_object_and_folder_vocab(tmp_path, corpus):
    from dlms.data.tokenizer import train_bpe_tokenizer

    tok = train_bpe_tokenizer(make_docs(60), 300, out_dir=tmp_path / "tok")
    by_obj = builder(tmp_path, seq_len=16, layout="padded").build_from_raw(str(corpus), tok)
    by_dir = builder(tmp_path, seq_len=16, layout="padded").build_from_raw(str(corpus), str(tmp_path / "tok"))
    assert by_dir.from_cache and by_dir.cache_path == by_obj.cache_path
    assert by_obj.tokenizer is tok


def test_too_little_data_for_a_packed_block(tmp_path):
    f = write_lines(tmp_path / "tiny.txt", ["a b", "c d", "e f"])
    with pytest.raises(DataError, match="lower seq_len"):
        builder(tmp_path, seq_len=64, layout="packed", val_fraction=0.34).build_from_raw(str(f), 270)
    assert not list((tmp_path / "cache" / "datasets").iterdir())  # the failed build left nothing


def test_unreachable_hub_dataset_is_one_line_data_error(monkeypatch):
    datasets = pytest.importorskip("datasets")
    import huggingface_hub.constants

    # Offline mode fails at once instead of retrying the network for a minute.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    name = "hf:no-such-owner/no-such-dataset"
    msg = _one_line_error(lambda: read_examples(name), name)
    assert "save_to_disk" in msg


def test_empty_text_rows_are_skipped_and_bad_json_is_reported(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text('{"text": "kept"}\n{"text": "   "}\n{"text": "also kept"}\n', encoding="utf-8")
    assert texts(f) == ["kept", "also kept"]
    f.write_text('{"text": "ok"}\n{"text": broken}\n', encoding="utf-8")
    with pytest.raises(DataError, match="line 2 is not valid JSON"):
        list(read_examples(str(f)))


def test_build_from_raw_on_the_class_uses_the_default_settings(tmp_path, corpus):
    from dlms.data import cache

    ds = DatasetBuilder.build_from_raw(str(corpus), 300, 8)
    defaults = DatasetBuilder()
    assert ds.seq_len == 8 and ds.train.ids.shape[1] == 8
    assert (ds.layout, ds.meta["val_fraction"], ds.meta["split"]) == (defaults.layout, defaults.val_fraction, "tail")
    assert ds.cache_path.parent == cache.default_cache_dir() / "datasets"
    # On an instance it is an ordinary method, with the instance's settings.
    mine = builder(tmp_path, seq_len=12, layout="padded", val_fraction=0.1).build_from_raw(str(corpus), 300)
    assert (mine.seq_len, mine.layout, len(mine.val)) == (12, "padded", 6)
    assert list(inspect.signature(DatasetBuilder.build_from_raw).parameters) == ["path", "vocab", "seq_len"]
    assert "default settings" in DatasetBuilder.build_from_raw.__doc__


# ---------------------------------------------------------------------------------------------
# seq_len=None: fitted to the data


def sized_docs(word_counts: list[int]) -> list[str]:
    return [f"doc{i} " + " ".join(WORDS[(i + j) % len(WORDS)] for j in range(n)) for i, n in enumerate(word_counts)]


def row_lengths(ds, docs: list[str], extra: int) -> np.ndarray:
    """Tokens each document takes in a row (extra: bos + eos = 2 padded, eos = 1 packed)."""
    return np.asarray([len(ds.tokenizer.encode(d, add_special_tokens=False)) + extra for d in docs])


def test_auto_seq_len_fits_the_99th_percentile_of_long_documents(tmp_path):
    counts = [40 + (i * 37) % 50 for i in range(200)]  # 40..89 words
    f = write_lines(tmp_path / "long.txt", sized_docs(counts))
    ds = builder(tmp_path, seq_len=None, layout="padded", val_fraction=0.1).build_from_raw(str(f), 300)
    lengths = row_lengths(ds, sized_docs(counts)[:180], extra=2)  # tail split: the first 180 are training
    auto = ds.meta["seq_len_auto"]
    assert auto["measured_examples"] == 180 and auto["p99_tokens"] == int(np.sort(lengths)[math.ceil(0.99 * 179)])
    assert auto["p99_tokens"] > 64  # long documents: more than the 32 default
    m = auto_length.MULTIPLE
    assert ds.seq_len == auto["chosen"] == math.ceil(auto["p99_tokens"] / m) * m
    assert ds.train.ids.shape == (180, ds.seq_len) and ds.val.ids.shape[1] == ds.seq_len
    assert (lengths <= ds.seq_len).mean() >= 0.99
    assert auto["truncated_examples"] == int((lengths > ds.seq_len).sum()) == ds.meta["splits"]["train"]["truncated"]
    assert ds.seq_len_note.startswith(f"seq_len {ds.seq_len} fitted to the data: 99% of the 180 training examples")


def test_auto_seq_len_of_short_documents_rounds_up_and_cuts_nothing(tmp_path, corpus):
    ds = builder(tmp_path, seq_len=None, layout="padded", val_fraction=0.1).build_from_raw(str(corpus), 300)
    p99, m = ds.meta["seq_len_auto"]["p99_tokens"], auto_length.MULTIPLE
    assert ds.seq_len == max(auto_length.MINIMUM, math.ceil(p99 / m) * m) and p99 <= ds.seq_len < p99 + m
    assert ds.meta["seq_len_auto"]["truncated_examples"] == 0 and "longer" not in ds.seq_len_note
    explicit = builder(tmp_path, seq_len=ds.seq_len, layout="padded", val_fraction=0.1).build_from_raw(str(corpus), 300)
    assert explicit.meta["seq_len_auto"] is None and explicit.seq_len_note is None


def test_auto_seq_len_is_capped_and_counts_the_cut_examples(tmp_path):
    counts = [150 + 10 * (i % 3) for i in range(10)] + [700] * 30  # 30 documents far over the cap
    docs = [d.replace(" ", " x") for d in sized_docs(counts)]  # words and " x": several tokens a word
    f = write_lines(tmp_path / "huge.txt", docs)
    ds = builder(tmp_path, seq_len=None, layout="padded", val_fraction=0.0).build_from_raw(str(f), 300)
    lengths = row_lengths(ds, docs, extra=2)
    assert lengths.max() > auto_length.CAP
    assert ds.seq_len == auto_length.CAP == ds.meta["seq_len_auto"]["cap"]
    assert ds.meta["seq_len_auto"]["truncated_examples"] == int((lengths > 512).sum()) == 30
    assert ds.meta["splits"]["train"]["truncated"] == 30
    assert "capped at 512" in ds.seq_len_note and "30 longer example(s) are cut" in ds.seq_len_note


def test_auto_seq_len_measures_packed_documents_with_their_eos(tmp_path, monkeypatch):
    counts = [30] * 100 + [34]  # p99 lands on 30 words; the one longer document does not count
    docs = sized_docs(counts)
    f = write_lines(tmp_path / "p.txt", docs)
    monkeypatch.setattr(auto_length, "MULTIPLE", 1)  # see the exact measured length
    monkeypatch.setattr(auto_length, "MINIMUM", 1)
    ds = builder(tmp_path, seq_len=None, layout="packed", val_fraction=0.0).build_from_raw(str(f), 300)
    lengths = row_lengths(ds, docs, extra=1)
    assert ds.seq_len == ds.meta["seq_len_auto"]["p99_tokens"] == int(np.sort(lengths)[99])
    assert ds.train.ids.shape[1] == ds.seq_len and ds.meta["seq_len_auto"]["truncated_examples"] >= 1
    assert "continue into the next row" in ds.seq_len_note


def test_auto_seq_len_measures_at_most_the_sample(tmp_path, monkeypatch):
    counts = [5] * 20 + [60] * 20  # only the short documents are measured
    f = write_lines(tmp_path / "s.txt", sized_docs(counts))
    monkeypatch.setattr(auto_length, "SAMPLE", 20)
    ds = builder(tmp_path, seq_len=None, layout="padded", val_fraction=0.0).build_from_raw(str(f), 300)
    assert ds.meta["seq_len_auto"]["measured_examples"] == 20 and ds.seq_len < 60
    assert ds.meta["splits"]["train"]["truncated"] == 20  # the long ones, not measured, are cut


def test_auto_seq_len_is_cached_apart_from_explicit_lengths(tmp_path, corpus, monkeypatch):
    b = builder(tmp_path, seq_len=None, layout="padded", val_fraction=0.1)
    first = b.build_from_raw(str(corpus), 300)

    def boom(*a, **k):
        raise AssertionError("cache miss: re-tokenized or retrained")

    monkeypatch.setattr(builder_mod, "encode_texts", boom)
    monkeypatch.setattr(builder_mod, "train_bpe_tokenizer", boom)
    again = b.build_from_raw(str(corpus), 300)
    assert again.from_cache and again.cache_path == first.cache_path
    assert again.seq_len == first.seq_len and again.meta["seq_len_auto"] == first.meta["seq_len_auto"]
    monkeypatch.undo()
    # The same number given explicitly is its own entry, with the same rows; "auto" overrides a builder's length.
    explicit = builder(tmp_path, seq_len=first.seq_len, layout="padded", val_fraction=0.1).build_from_raw(
        str(corpus), 300)
    assert not explicit.from_cache and explicit.cache_path != first.cache_path
    assert np.array_equal(explicit.train.ids, first.train.ids)
    overridden = builder(tmp_path, seq_len=16, layout="padded", val_fraction=0.1).build_from_raw(
        str(corpus), 300, seq_len="auto")
    assert overridden.from_cache and overridden.cache_path == first.cache_path
    with pytest.raises(ConfigError, match="or None to fit the data"):
        builder(tmp_path, seq_len=1)


# ---------------------------------------------------------------------------------------------
# cache


def test_npy_row_writer_streams_a_valid_npy(tmp_path):
    from dlms.data.cache import NpyRowWriter, load_array

    with NpyRowWriter(tmp_path / "a.npy", 3, np.int32) as w:
        w.append(np.arange(6).reshape(2, 3))
        w.append(np.array([[7, 8, 9]]))
    arr = load_array(tmp_path / "a.npy")
    assert isinstance(arr, np.memmap) and arr.dtype == np.int32
    assert arr.tolist() == [[0, 1, 2], [3, 4, 5], [7, 8, 9]]
    assert np.load(tmp_path / "a.npy", allow_pickle=False).shape == (3, 3)


def test_staged_entry_is_atomic(tmp_path):
    from dlms.data.cache import is_complete, staged_entry, write_meta

    final = tmp_path / "datasets" / "k"
    with pytest.raises(RuntimeError):
        with staged_entry(final) as tmp:
            (tmp / "train_ids.npy").write_bytes(b"partial")
            raise RuntimeError("crash mid-build")
    assert not final.exists() and not list(final.parent.iterdir())
    with staged_entry(final) as tmp:
        write_meta(tmp, {"who": "first"})
    with staged_entry(final) as tmp:  # a concurrent build finishing second is discarded
        write_meta(tmp, {"who": "second"})
    assert is_complete(final) and json.loads((final / "meta.json").read_text())["who"] == "first"
    assert [p.name for p in final.parent.iterdir()] == ["k"]
