"""Sample figures beside the data's own: length and entropy gaps, `at_data_length`, the token rows
they are computed on, and validation texts drawn as samples are (padded and packed layouts)."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from dlms.data.tokenized import TokenSplit
from dlms.eval.generation import (
    data_comparison,
    data_length_note,
    data_reference_texts,
    generation_figures,
    text_token_rows,
    unigram_entropy,
)


def test_gaps_and_verdict_on_a_hand_made_example():
    # samples: 2 and 2 words, rows [1, 2] (entropy log 2) and [1, 1] (entropy 0): mean log(2) / 2
    # data:    2 and 2 words, rows [1, 2] and [3, 4]: mean log 2
    f = generation_figures(["a b", "a a"], [[1, 2], [1, 1]], data_texts=["a b", "c d"],
                           data_token_rows=[[1, 2], [3, 4]])
    assert f["mean_words"] == 2 and f["data_mean_words"] == 2 and f["data_samples"] == 2
    assert f["unigram_entropy"] == pytest.approx(math.log(2) / 2)
    assert f["data_unigram_entropy"] == pytest.approx(math.log(2))
    assert f["length_gap"] == pytest.approx(0.0) and f["entropy_gap"] == pytest.approx(-0.5)
    assert f["at_data_length"] is False  # as long as the data, but half its diversity
    assert "entropy 0.347 against 0.693 (-50%" in data_length_note(f)

    # 11 words against the data's 10, the same entropy: a length gap of exactly +10%, inside the bound
    f = generation_figures([" ".join("w" * 11)], [[1, 2]], data_texts=[" ".join("w" * 10)], data_token_rows=[[3, 4]])
    assert f["length_gap"] == pytest.approx(0.10) and f["entropy_gap"] == pytest.approx(0.0)
    assert f["at_data_length"] is True and data_length_note(f) is None

    # 5 words against 10: half the data's length
    f = generation_figures(["a b c d e"], [[1, 2, 3, 4, 5]], data_texts=["a b c d e f g h i j"],
                           data_token_rows=[[1, 2, 3, 4, 5]])
    assert f["length_gap"] == pytest.approx(-0.5) and f["entropy_gap"] == pytest.approx(0.0)
    assert f["at_data_length"] is False


@pytest.mark.parametrize("words, entropy, expected", [
    (10.0, 1.05, True), (11.0, 0.95, True), (9.0, 1.0, True),  # on the bounds: inclusive
    (8.9, 1.0, False), (11.2, 1.0, False), (10.0, 1.06, False), (10.0, 0.94, False),
])
def test_at_data_length_bounds(words, entropy, expected):
    out = data_comparison({"mean_words": words, "unigram_entropy": entropy},
                          {"mean_words": 10.0, "unigram_entropy": 1.0})
    assert out["length_gap"] == pytest.approx(words / 10 - 1) and out["entropy_gap"] == pytest.approx(entropy - 1)
    assert out["at_data_length"] is expected


def test_data_without_words_gives_no_gap_and_no_verdict():
    out = data_comparison({"mean_words": 3.0, "unigram_entropy": 1.0}, {"mean_words": 0.0, "unigram_entropy": 0.0})
    assert out["length_gap"] is None and out["entropy_gap"] is None and out["at_data_length"] is False


def test_no_data_texts_no_data_figures():
    f = generation_figures(["a b", "c"], [[1, 2], [3]])
    assert "data_mean_words" not in f and "at_data_length" not in f
    with pytest.raises(TypeError, match="tokenizer"):
        generation_figures(["a b"])


def test_unigram_entropy_is_a_per_sample_mean_that_grows_with_length():
    assert unigram_entropy([[1, 2, 3, 4]]) == pytest.approx(math.log(4))
    assert unigram_entropy([[7, 7, 7]]) == 0.0
    # a row and the same tokens repeated: the same frequencies, the same entropy
    assert unigram_entropy([[1, 2] * 5]) == pytest.approx(math.log(2))
    # empty rows are skipped (empty_share reports them), not counted as 0
    assert unigram_entropy([[1, 2], []]) == pytest.approx(math.log(2))
    # more distinct tokens, higher entropy: why it is compared with the data at the data's length
    assert unigram_entropy([list(range(16))]) > unigram_entropy([list(range(4))])


@pytest.fixture(scope="module")
def bpe(tmp_path_factory):
    from dlms.data.corpus import generate_examples
    from dlms.data.tokenizer import train_bpe_tokenizer

    texts = [e["text"] for e in generate_examples(300, seed=0)]
    return train_bpe_tokenizer(texts, vocab_size=300, out_dir=tmp_path_factory.mktemp("bpe"))


def test_token_rows_have_no_special_tokens(bpe):
    special = set(bpe.all_special_ids)
    text = f"the chef {bpe.eos_token} cooks {bpe.pad_token}"
    (row,) = text_token_rows(bpe, [text])
    assert row and not special & set(row)
    assert text_token_rows(bpe, ["the chef"]) == [bpe.encode("the chef", add_special_tokens=False)]
    # the same rows whichever side (samples or data) a text is on
    f = generation_figures(["the chef"], tokenizer=bpe, data_texts=["the chef"])
    assert f["length_gap"] == 0 and f["entropy_gap"] == 0 and f["at_data_length"] is True


# ---------------------------------------------------------------- validation texts as samples

BOS, EOS, PAD = 1, 2, 0


class StubLM:
    """What data_reference_texts needs of a DiffusionLM; decode as DiffusionLM.decode does it
    (start tokens dropped, cut at the first eos, pad dropped), each token shown as its number."""

    def __init__(self, layout: str, label_column: str | None = None):
        self.cfg = SimpleNamespace(data=SimpleNamespace(layout=layout, label_column=label_column))
        self.method = SimpleNamespace(special=SimpleNamespace(eos=EOS, pad=PAD, bos=BOS))
        self._start_tokens = [BOS] if layout == "padded" else [EOS]

    def decode(self, ids: torch.Tensor) -> list[str]:
        out = []
        for row in ids.tolist():
            row = row[1:]
            row = row[: row.index(EOS)] if EOS in row else row
            out.append(" ".join(str(t) for t in row if t != PAD))
        return out


def test_padded_rows_are_decoded_like_samples_and_filtered_by_label():
    ids = np.array([[BOS, 10, 11, EOS, PAD, PAD],
                    [BOS, 12, EOS, PAD, PAD, PAD],
                    [BOS, 13, 14, 15, 16, 17],  # a cut row: no eos
                    [BOS, 18, 19, EOS, PAD, PAD]], dtype=np.int32)
    labels = np.array([[0], [1], [0], [1]])
    data = SimpleNamespace(val=TokenSplit(ids, labels, ["sentiment"], PAD), label_names={"sentiment": ["neg", "pos"]})
    lm = StubLM("padded", "sentiment")
    assert data_reference_texts(lm, data, n=10) == ["10 11", "12", "13 14 15 16 17", "18 19"]
    assert data_reference_texts(lm, data, n=2) == ["10 11", "18 19"]  # evenly spread over the split
    assert data_reference_texts(lm, data, n=10, labels=["pos", "pos"]) == ["12", "18 19"]
    assert len(data_reference_texts(lm, data, n=10, labels=["pos", "neg"])) == 4  # every class: every row


def test_packed_rows_start_at_a_document_boundary():
    # documents 3..5, 6..9 (4 tokens), 10, 11..13, each followed by eos, in rows of 4
    stream = [3, 4, 5, EOS, 6, 7, 8, 9, EOS, 10, EOS, 11, 12, 13, EOS, 3]
    data = SimpleNamespace(val=TokenSplit(np.array(stream, dtype=np.int32).reshape(4, 4), pad_id=None),
                           label_names={})
    texts = data_reference_texts(StubLM("packed"), data, n=4)
    # row 0 starts mid-document: the document after its first eos, cut at seq_len - 1 = 3 tokens as
    # a sample is; row 1: the next one; row 2 starts at an eos whose document row 1 took: the next
    # one; row 3's only document runs into the end of the split: none
    assert texts == ["6 7 8", "10", "11 12 13"]


def test_samples_that_repeat_themselves_are_not_at_the_data_diversity():
    """Unigram entropy is within each text: the same fluent text over and over matches the data's
    length and entropy, and only the diversity across samples (distinct-2) tells."""
    from dlms.eval.generation import data_diversity_note, generation_figures

    data = ["the chef cooked a fine soup .", "a dog ran in the park today .", "my sister liked the quiet lake ."]
    rows = [[i + 1 for i in range(len(t.split()))] for t in data]
    same = [data[0]] * 3
    figures = generation_figures(same, [rows[0]] * 3, data_texts=data, data_token_rows=rows)
    assert figures["at_data_length"] and not figures["at_data_diversity"]
    assert figures["distinct_2"] < figures["data_distinct_2"]
    assert "diversity across samples" in data_diversity_note(figures)
    varied = generation_figures(data, rows, data_texts=data, data_token_rows=rows)
    assert varied["at_data_diversity"] and data_diversity_note(varied) is None
