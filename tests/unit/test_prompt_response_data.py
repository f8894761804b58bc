"""Prompt/response data: reading the columns, the row layout, `prompt_len` in the cache and in
batches, rows cut or dropped to fit (and counted), and the config keys that switch it on."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from dlms.config import load_config
from dlms.data.builder import DatasetBuilder
from dlms.data.loader import BatchIterator, eval_batches
from dlms.data.prompt_response import SEP, describe_cuts, layout_row, row_head
from dlms.data.sources import read_examples
from dlms.data.tokenizer import special_ids, train_bpe_tokenizer
from dlms.errors import ConfigError, DataError

PAIRS = [(f"name[{n}] food[{f}]", f"{n} serves {f} food .") for n in ("the eagle", "the mill", "aromi", "cotto")
         for f in ("french", "italian", "indian", "english", "thai")]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def pairs_file(tmp_path, n: int = 40, name: str = "d.jsonl", **extra):
    rows = [{"prompt": p, "response": r, **extra} for p, r in (PAIRS * 3)[:n]]
    return write_jsonl(tmp_path / name, rows)


def builder(tmp_path, seq_len=48, **kw) -> DatasetBuilder:
    return DatasetBuilder(seq_len=seq_len, layout="padded", val_fraction=0.1, cache_dir=str(tmp_path / "cache"),
                          prompt_column=kw.pop("prompt_column", "prompt"), **kw)


# ---------------------------------------------------------------------------------------------
# reading


def test_jsonl_csv_and_tsv_give_the_same_pairs(tmp_path):
    rows = [{"q": p, "a": r, "kind": "d2t"} for p, r in PAIRS[:3]]
    write_jsonl(tmp_path / "d.jsonl", rows)
    for suffix, delimiter in ((".csv", ","), (".tsv", "\t")):
        with open(tmp_path / f"d{suffix}", "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=["q", "a", "kind"], delimiter=delimiter)
            writer.writeheader()
            writer.writerows(rows)
    expected = [{"prompt": p, "response": r, "task": "d2t", "labels": {}} for p, r in PAIRS[:3]]
    for suffix in (".jsonl", ".csv", ".tsv"):
        got = list(read_examples(str(tmp_path / f"d{suffix}"), prompt_column="q", response_column="a",
                                 task_column="kind"))
        assert got == expected, suffix


def test_hf_saved_dataset_gives_pairs(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"prompt": [p for p, _ in PAIRS[:4]], "response": [r for _, r in PAIRS[:4]]}) \
        .save_to_disk(str(tmp_path / "saved"))
    got = list(read_examples(str(tmp_path / "saved"), prompt_column="prompt"))
    assert [(g["prompt"], g["response"]) for g in got] == PAIRS[:4]


def test_a_missing_prompt_column_is_one_clear_error(tmp_path):
    f = write_jsonl(tmp_path / "d.jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(DataError) as err:
        list(read_examples(str(f), prompt_column="prompt", response_column="answer"))
    message = str(err.value)
    assert "prompt column 'prompt' not found" in message and "question, answer" in message
    assert "data.prompt_column" in message and "\n" not in message
    with pytest.raises(DataError, match="response column 'response' not found.*data.response_column"):
        list(read_examples(str(f), prompt_column="question"))


def test_the_builder_and_a_text_file_name_the_missing_column(tmp_path):
    f = write_jsonl(tmp_path / "d.jsonl", [{"text": "just text"}] * 20)
    with pytest.raises(DataError, match="prompt column 'prompt' not found in .*available columns: text"):
        builder(tmp_path).build_from_raw(str(f), 300)
    txt = tmp_path / "d.txt"
    txt.write_text("one line\nanother\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"\.txt file: it has no columns"):
        builder(tmp_path).build_from_raw(str(txt), 300)
    with pytest.raises(DataError, match="prompt column 'prompt' not found in 'builtin'"):
        builder(tmp_path).build_from_raw("builtin:50", 300)


def test_rows_without_a_response_are_skipped_and_a_prompt_must_be_a_string(tmp_path):
    f = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "a", "response": "  "}, {"prompt": "", "response": "b"}])
    assert [(e["prompt"], e["response"]) for e in read_examples(str(f), prompt_column="prompt")] == [("", "b")]
    g = write_jsonl(tmp_path / "e.jsonl", [{"prompt": {"name": "x"}, "response": "b"}])
    with pytest.raises(DataError, match="prompt column 'prompt' is a dict; every row needs a prompt string"):
        list(read_examples(str(g), prompt_column="prompt"))


# ---------------------------------------------------------------------------------------------
# layout


def test_row_head_and_layout():
    assert row_head(1, 9, [5, 6]) == [1, 5, 6, 9]
    assert row_head(1, 9, [5, 6], task=[7]) == [1, 7, 9, 5, 6, 9]
    assert layout_row([1, 5, 9], [4, 4], eos=2, seq_len=8) == ([1, 5, 9, 4, 4, 2], False)
    assert layout_row([1, 5, 9], [4, 4, 4, 4, 4], eos=2, seq_len=6) == ([1, 5, 9, 4, 4, 4], True)  # cut: no eos
    assert layout_row([1, 5, 6, 9], [4], eos=2, seq_len=4) is None  # the head fills the row


def test_built_rows_follow_the_layout_and_store_where_the_response_starts(tmp_path):
    ds = builder(tmp_path).build_from_raw(str(pairs_file(tmp_path)), 300)
    tok = ds.tokenizer
    ids = special_ids(tok)
    assert tok.sep_token == SEP and ids["sep"] == len(tok) - 1 and ds.special_ids["sep"] == ids["sep"]
    assert ds.prompted and ds.train.prompt_len is not None and len(ds.train.prompt_len) == len(ds.train)
    assert (ds.tokenizer.sep_token_id not in (ids["pad"], ids["bos"], ids["eos"], ids["mask"]))
    for i in range(3):
        row = [int(t) for t in ds.train.ids[i]]
        start = int(ds.train.prompt_len[i])
        prompt, response = PAIRS[i]
        assert row[0] == ids["bos"] and row[start - 1] == ids["sep"]
        assert tok.decode(row[1:start - 1]) == prompt
        end = row.index(ids["eos"])
        assert tok.decode(row[start:end]) == response
        assert all(t == ids["pad"] for t in row[end + 1:])
    # Loaded again from the cache: the same arrays, prompt lengths included.
    again = builder(tmp_path).build_from_raw(str(pairs_file(tmp_path)), 300)
    assert again.from_cache and np.array_equal(again.train.prompt_len, ds.train.prompt_len)


def test_task_tokens_go_before_the_prompt(tmp_path):
    fixed = builder(tmp_path, task="describe").build_from_raw(str(pairs_file(tmp_path)), 300)
    tok = fixed.tokenizer
    row = [int(t) for t in fixed.train.ids[0]]
    sep = tok.sep_token_id
    assert row[1:row.index(sep)] == tok.encode("describe", add_special_tokens=False)
    # A task column: each row's own; a row without one has no task tokens and one separator.
    rows = [{"prompt": p, "response": r, "kind": k} for (p, r), k in zip(PAIRS * 2, ["list", None] * 20)]
    f = write_jsonl(tmp_path / "t.jsonl", rows)
    ds = builder(tmp_path, task_column="kind").build_from_raw(str(f), 300)
    first, second = ([int(t) for t in ds.train.ids[i]] for i in (0, 1))
    sep = ds.tokenizer.sep_token_id
    assert ds.tokenizer.decode(first[1:first.index(sep)]) == "list" and first.count(sep) == 2
    assert second.count(sep) == 1 and int(ds.train.prompt_len[1]) == second.index(sep) + 1


def test_cache_key_changes_with_the_prompt_options(tmp_path):
    f = pairs_file(tmp_path, kind="x")
    paths = {builder(tmp_path, **kw).build_from_raw(str(f), 300).cache_path
             for kw in ({}, {"task": "describe"}, {"task_column": "kind"}, {"prompt_column": "response",
                                                                          "response_column": "prompt"})}
    assert len(paths) == 4
    text = DatasetBuilder(seq_len=48, layout="padded", val_fraction=0.1, cache_dir=str(tmp_path / "cache"),
                          text_column="prompt").build_from_raw(str(f), 300)
    assert text.cache_path not in paths and text.train.prompt_len is None and not text.prompted


def test_long_rows_are_cut_at_the_response_end_and_counted(tmp_path):
    long = [{"prompt": "p q", "response": " ".join(["word"] * 30)}] * 20 + \
        [{"prompt": p, "response": r} for p, r in PAIRS[:20]]
    f = write_jsonl(tmp_path / "d.jsonl", long)
    ds = builder(tmp_path, seq_len=24).build_from_raw(str(f), 300)
    stats = ds.meta["splits"]
    cut = stats["train"]["truncated"] + stats["val"]["truncated"]
    assert cut >= 20 and stats["train"]["dropped"] == 0
    ids = special_ids(ds.tokenizer)
    # A cut row keeps its head and the start of its response, and has no end-of-text.
    row = [int(t) for t in ds.train.ids[0]]
    assert ids["eos"] not in row and row[int(ds.train.prompt_len[0]) - 1] == ids["sep"]
    assert ds.notes and f"{stats['train']['truncated']} of" in ds.notes[0] and "cut at the end of their response" \
        in ds.notes[0]


def test_a_prompt_that_fills_the_row_is_dropped_and_counted_or_an_error_when_all_are(tmp_path):
    rows = [{"prompt": " ".join(["long"] * 40), "response": "r"}] * 5 + [{"prompt": p, "response": r}
                                                                          for p, r in PAIRS[:20]]
    ds = builder(tmp_path, seq_len=24).build_from_raw(str(write_jsonl(tmp_path / "d.jsonl", rows)), 300)
    dropped = ds.meta["splits"]["train"]["dropped"] + ds.meta["splits"]["val"]["dropped"]
    assert dropped == 5 and len(ds.train) + len(ds.val) == 20
    assert any("5 train rows dropped" in note for note in ds.notes)
    everyone = write_jsonl(tmp_path / "e.jsonl", [{"prompt": " ".join(["long"] * 40), "response": "r"}] * 20)
    with pytest.raises(DataError, match="every one of the .* has a prompt that alone fills the 24-token row"):
        builder(tmp_path, seq_len=24).build_from_raw(str(everyone), 300)


def test_describe_cuts_is_silent_without_cuts():
    assert describe_cuts({"train": {"examples": 4, "truncated": 0, "dropped": 0}}, 16) is None


def test_auto_seq_len_measures_the_whole_row(tmp_path):
    ds = builder(tmp_path, seq_len=None).build_from_raw(str(pairs_file(tmp_path)), 300)
    longest = max(int(np.count_nonzero(row != special_ids(ds.tokenizer)["pad"])) for row in ds.train.ids)
    assert ds.seq_len >= longest and ds.meta["splits"]["train"]["truncated"] == 0


def test_a_given_tokenizer_gets_a_separator(tmp_path):
    tok = train_bpe_tokenizer([p + " " + r for p, r in PAIRS], 300)
    assert tok.sep_token is None and "sep" not in special_ids(tok)
    ds = builder(tmp_path).build_from_raw(str(pairs_file(tmp_path)), tok)
    assert tok.sep_token_id == ds.tokenizer.sep_token_id == len(tok) - 1  # the next id, nothing moved


# ---------------------------------------------------------------------------------------------
# batches and options


def test_batches_carry_the_prompt_lengths(tmp_path):
    ds = builder(tmp_path).build_from_raw(str(pairs_file(tmp_path)), 300)
    batch = next(BatchIterator(ds.train, batch_size=4, seed=0))
    rows = batch["input_ids"]
    sep = ds.tokenizer.sep_token_id
    assert batch["prompt_len"].shape == (4,)
    for row, start in zip(rows.tolist(), batch["prompt_len"].tolist()):
        assert row[start - 1] == sep
    first = next(eval_batches(ds.val, batch_size=2))
    assert first["prompt_len"].tolist() == ds.val.prompt_len[:2].tolist()
    text = DatasetBuilder(seq_len=48, layout="padded", val_fraction=0.1, cache_dir=str(tmp_path / "cache"),
                          text_column="prompt").build_from_raw(str(pairs_file(tmp_path)), 300)
    assert next(BatchIterator(text.train, batch_size=4))["prompt_len"] is None


def test_head_tokens_keeps_the_prompt_lengths(tmp_path):
    ds = builder(tmp_path).build_from_raw(str(pairs_file(tmp_path)), 300)
    part = ds.train.head_tokens(40)
    assert len(part.prompt_len) == len(part) and np.array_equal(part.prompt_len, ds.train.prompt_len[:len(part)])


@pytest.mark.parametrize("overrides, message", [
    (["data.task=x"], "data.task' applies to prompt/response data only"),
    (["data.task_column=kind"], "data.task_column' applies to prompt/response data only"),
    (["data.format=prompt_response", "data.task=x", "data.task_column=kind"], "keep one"),
    (["data.format=prompt_response", "data.layout=packed"], "set data.layout=padded"),
    (["data.format=prompt_response", "data.task=''"], "data.task is blank"),
    (["data.format=chat"], "data.format' must be one of 'text', 'prompt_response'"),
    (["train.init_from=runs/x", "data.tokenizer=gpt2"], "drop data.tokenizer"),
])
def test_config_keys_that_do_not_go_together(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_the_builder_refuses_prompts_in_packed_rows(tmp_path):
    with pytest.raises(ConfigError, match="layout='padded'"):
        DatasetBuilder(layout="packed", prompt_column="prompt")
    with pytest.raises(ConfigError, match="apply to prompt/response rows"):
        DatasetBuilder(layout="padded", task="x")
