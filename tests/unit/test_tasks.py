"""Downstream tasks: E2E preparation, task-file validation, reference and multiple-choice scoring."""
from __future__ import annotations

import csv
import json
import math
from collections import Counter
from pathlib import Path

import pytest

from dlms.errors import DataError, DlmsError
from dlms.eval.tasks import (choice_prompt, evaluate_multiple_choice, evaluate_references, prepare_e2e,
                             read_multiple_choice, read_reference_task)


# ---------------------------------------------------------------- tiny trained runs

def _train(tmp_path_factory, method: str):
    from dlms.cli import main
    from dlms.model import DiffusionLM
    from tests.conftest import tiny_overrides

    out = tmp_path_factory.mktemp(f"tasks-{method}")
    assert main(["train", "--samples", "0", *tiny_overrides(out, method, steps=8)]) == 0
    return DiffusionLM.load_checkpoint(out, device="cpu")


@pytest.fixture(scope="module")
def ar_lm(tmp_path_factory):
    return _train(tmp_path_factory, "ar")


@pytest.fixture(scope="module")
def masked_lm(tmp_path_factory):
    return _train(tmp_path_factory, "masked")


# ---------------------------------------------------------------- E2E preparation

E2E_ROWS = [  # 6 mrs with 1-3 refs each; quoted fields with commas, a non-ASCII character
    ("name[The Vaults], eatType[pub], priceRange[more than £30]", "The Vaults is an expensive pub."),
    ("name[The Vaults], eatType[pub], priceRange[more than £30]", 'The Vaults, a pub, costs "more than £30".'),
    ("name[Cocum], eatType[coffee shop]", "Cocum is a coffee shop."),
    ("name[Alimentum], area[city centre]", "Alimentum is in the city centre."),
    ("name[Cocum], eatType[coffee shop]", "There is a coffee shop called Cocum."),
    ("name[Alimentum], area[city centre]", "In the city centre is Alimentum."),
    ("name[Alimentum], area[city centre]", "Alimentum, city centre."),
    ("name[Aromi], food[Italian]", "Aromi serves Italian food."),
    ("name[Zizzi], near[The Sorrento]", "Zizzi is near The Sorrento."),
    ("name[Zizzi], near[The Sorrento]", "Near The Sorrento you find Zizzi."),
    ("name[Wildwood], customer rating[high]", "Wildwood is highly rated."),
]


def _write_e2e(path: Path, rows=E2E_ROWS) -> Path:
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["mr", "ref"])
        writer.writerows(rows)
    return path


def _split(out: dict[str, Path]) -> tuple[list[str], list[dict], list[str]]:
    train = out["train_txt"].read_text(encoding="utf-8").splitlines()
    val_items = read_reference_task(out["val_jsonl"])
    val = out["val_txt"].read_text(encoding="utf-8").splitlines()
    return train, val_items, val


def test_prepare_e2e_splits_by_mr(tmp_path):
    out = prepare_e2e(_write_e2e(tmp_path / "dev.csv"), tmp_path / "out", val_fraction=0.34, seed=0)
    assert set(out) == {"train_txt", "val_jsonl", "val_txt"} and all(p.is_file() for p in out.values())
    train, val_items, val = _split(out)
    # every row exactly once, as "mr = ref", train + val together
    assert Counter(train + val) == Counter(f"{mr} = {ref}" for mr, ref in E2E_ROWS)
    mrs = {mr for mr, _ in E2E_ROWS}
    train_mrs = {line.split(" = ")[0] for line in train}
    val_mrs = {item["prompt"][: -len(" =")] for item in val_items}
    assert train_mrs | val_mrs == mrs and not train_mrs & val_mrs
    assert len(val_mrs) == round(6 * 0.34) == 2
    assert {line.split(" = ")[0] for line in val} == val_mrs
    for item in val_items:  # prompt format, every ref of its mr, in file order
        assert item["prompt"].endswith("] =")
        mr = item["prompt"][: -len(" =")]
        assert item["references"] == [ref for m, ref in E2E_ROWS if m == mr]


def test_prepare_e2e_is_deterministic_by_seed(tmp_path):
    csv_path = _write_e2e(tmp_path / "dev.csv")

    def val_mrs(seed, name):
        out = prepare_e2e(csv_path, tmp_path / name, val_fraction=0.34, seed=seed)
        return [item["prompt"] for item in read_reference_task(out["val_jsonl"])]

    assert val_mrs(0, "a") == val_mrs(0, "b")
    assert set(val_mrs(0, "a")) != set(val_mrs(1, "c"))  # seeds 0 and 1 pick different validation mrs


def test_prepare_e2e_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        prepare_e2e(tmp_path / "nope.csv", tmp_path / "out")
    bad = tmp_path / "bad.csv"
    bad.write_text("meaning,text\na,b\n", encoding="utf-8")
    with pytest.raises(DataError, match="mr, ref"):
        prepare_e2e(bad, tmp_path / "out")
    one = _write_e2e(tmp_path / "one.csv", [("name[A]", "A."), ("name[A]", "It is A.")])
    with pytest.raises(DataError, match="at least 2"):
        prepare_e2e(one, tmp_path / "out")
    with pytest.raises(DataError, match="val_fraction"):
        prepare_e2e(_write_e2e(tmp_path / "dev.csv"), tmp_path / "out", val_fraction=1.0)


# ---------------------------------------------------------------- reading task files

def _jsonl(path: Path, lines: list) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines), encoding="utf-8")
    return path


def test_read_reference_task_and_errors(tmp_path):
    good = _jsonl(tmp_path / "t.jsonl", [{"prompt": "a =", "references": ["x", "y"], "id": 7}, "",
                                         {"prompt": "b =", "references": ["z"]}])
    items = read_reference_task(good)
    assert [it["prompt"] for it in items] == ["a =", "b ="] and items[0]["references"] == ["x", "y"]
    assert items[0]["id"] == 7
    with pytest.raises(DataError, match="does not exist"):
        read_reference_task(tmp_path / "missing.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n  \n", encoding="utf-8")
    with pytest.raises(DataError, match="empty"):
        read_reference_task(tmp_path / "empty.jsonl")
    bad = _jsonl(tmp_path / "bad.jsonl", [{"prompt": "a", "references": ["x"]}, "{not json"])
    with pytest.raises(DataError, match="line 2"):
        read_reference_task(bad)
    with pytest.raises(DataError, match="line 1.*'references'"):
        read_reference_task(_jsonl(tmp_path / "k.jsonl", [{"prompt": "a"}]))
    with pytest.raises(DataError, match="line 2.*empty"):
        read_reference_task(_jsonl(tmp_path / "e.jsonl", [{"prompt": "a", "references": ["x"]},
                                                          {"prompt": "b", "references": []}]))
    with pytest.raises(DataError, match="list of strings"):
        read_reference_task(_jsonl(tmp_path / "s.jsonl", [{"prompt": "a", "references": "x"}]))


def test_read_multiple_choice_and_errors(tmp_path):
    rows = [{"question": "q1", "choices": ["a", "b", "c"], "answer": "C"},
            {"question": "q2", "choices": ["a", "b"], "answer": 1, "subject": "s"},
            {"question": "q3", "choices": ["a", "b"], "answer": "a"}]
    items = read_multiple_choice(_jsonl(tmp_path / "mc.jsonl", rows))
    assert [it["answer"] for it in items] == [2, 1, 0] and items[1]["subject"] == "s"
    with pytest.raises(DataError, match="does not exist"):
        read_multiple_choice(tmp_path / "missing.jsonl")
    (tmp_path / "empty.jsonl").write_text("", encoding="utf-8")
    with pytest.raises(DataError, match="empty"):
        read_multiple_choice(tmp_path / "empty.jsonl")
    with pytest.raises(DataError, match="line 3"):
        read_multiple_choice(_jsonl(tmp_path / "bad.jsonl", rows[:2] + ["[1, 2]"]))
    for answer in (2, "C", -1, "AB", True):
        with pytest.raises(DataError, match="answer"):
            read_multiple_choice(_jsonl(tmp_path / "r.jsonl", [{"question": "q", "choices": ["a", "b"],
                                                                "answer": answer}]))
    with pytest.raises(DataError, match="at least 2 choices"):
        read_multiple_choice(_jsonl(tmp_path / "c.jsonl", [{"question": "q", "choices": ["a"], "answer": 0}]))
    with pytest.raises(DataError, match="'answer'"):
        read_multiple_choice(_jsonl(tmp_path / "k.jsonl", [{"question": "q", "choices": ["a", "b"]}]))
    assert issubclass(DataError, DlmsError)


# ---------------------------------------------------------------- evaluate_references

class FakeGenerator:
    """Returns fixed outputs and records how it was called."""

    def __init__(self, outputs):
        self.outputs, self.calls = outputs, []

    def generate_continuations(self, prompts, length=None, *, seed=0, **sampling):
        self.calls.append({"prompts": list(prompts), "length": length, "seed": seed, **sampling})
        return self.outputs[: len(prompts)]


REF_ITEMS = [
    {"prompt": "name[A] =", "references": ["the cafe a is near the river", "a is a cafe"]},
    {"prompt": "name[B] =", "references": ["b serves cheap italian food in town"]},
    {"prompt": "name[C] =", "references": ["c is a family friendly pub with high ratings"]},
    {"prompt": "name[D] =", "references": ["d is an expensive restaurant near the station"]},
]


def test_evaluate_references_perfect_and_worse():
    fake = FakeGenerator([it["references"][0] for it in REF_ITEMS])
    perfect = evaluate_references(fake, REF_ITEMS, seed=5, steps=3, temperature=0.5)
    assert perfect["items"] == 4
    assert perfect["bleu"] == pytest.approx(100.0)
    assert all(perfect[k] == pytest.approx(1.0) for k in ("rouge1", "rouge2", "rougeL"))
    assert fake.calls[0] == {"prompts": [it["prompt"] for it in REF_ITEMS], "length": None, "seed": 5,
                             "steps": 3, "temperature": 0.5}
    assert perfect["examples"] == [{"prompt": it["prompt"], "output": it["references"][0],
                                    "reference": it["references"][0]} for it in REF_ITEMS[:3]]

    worse = evaluate_references(FakeGenerator(["the cafe a is near the sea", "b serves food",
                                               "nothing alike here", "d is an expensive restaurant"]), REF_ITEMS)
    assert 0 < worse["bleu"] < 100
    assert all(0 < worse[k] < 1 for k in ("rouge1", "rouge2", "rougeL"))
    assert worse["rouge1"] < perfect["rouge1"] and worse["rougeL"] < perfect["rougeL"]

    fake = FakeGenerator([it["references"][0] for it in REF_ITEMS])
    assert evaluate_references(fake, REF_ITEMS, max_items=2)["items"] == 2 and len(fake.calls[0]["prompts"]) == 2
    with pytest.raises(DataError, match="no reference items"):
        evaluate_references(fake, [])
    with pytest.raises(DataError, match="one per prompt"):
        evaluate_references(FakeGenerator(["only one"]), REF_ITEMS)


def test_evaluate_references_with_tiny_ar(ar_lm):
    items = [{"prompt": "the chef", "references": ["the chef cooked a meal at the restaurant ."]},
             {"prompt": "my uncle", "references": ["my uncle likes the guitar .", "my uncle is lazy ."]},
             {"prompt": "last saturday", "references": ["last saturday my dad visited the club ."]}]
    first = evaluate_references(ar_lm, items, seed=3, length=16)
    assert first == evaluate_references(ar_lm, items, seed=3, length=16)
    assert first["items"] == 3 and 0 <= first["bleu"] <= 100
    assert all(0 <= first[k] <= 1 for k in ("rouge1", "rouge2", "rougeL"))
    assert [ex["prompt"] for ex in first["examples"]] == ["the chef", "my uncle", "last saturday"]
    assert all(isinstance(ex["output"], str) for ex in first["examples"])


# ---------------------------------------------------------------- evaluate_multiple_choice

class FakeScorer:
    """Scores each continuation with a hand-chosen logprob and records the pairs."""

    def __init__(self, logprobs: dict[str, float], stochastic: bool = False):
        self.logprobs, self.calls = logprobs, []
        self.method = type("Method", (), {"stochastic_bound": stochastic})()

    def score_continuations(self, pairs, *, passes=None, seed=0, batch_size=32, label=None):
        self.calls.append({"pairs": list(pairs), "passes": passes, "seed": seed})
        return [{"logprob": self.logprobs[cont], "se": 0.0, "tokens": 1, "greedy": False} for _, cont in pairs]


def test_evaluate_multiple_choice_acc_and_acc_norm_by_hand():
    # item 1: "no" wins on total logprob (-2 > -4) but "absolutely" wins per character
    # (-4/10 = -0.4 > -2/2 = -1); the answer is "absolutely", so acc misses and acc_norm hits.
    # item 2: "red" wins on both (-1 vs -5; -1/3 vs -5/5), the answer is "red": both hit.
    # item 3: "up" wins on both (-0.5 vs -3; -0.25 vs -0.75), the answer (letter B) is "down": both miss.
    fake = FakeScorer({" no": -2.0, " absolutely": -4.0, " red": -1.0, " green": -5.0, " up": -0.5,
                       " down": -3.0})
    items = [{"question": "Is it?", "choices": ["no", "absolutely"], "answer": 1},
             {"question": "Colour?", "choices": ["red", "green"], "answer": 0},
             {"question": "Way?", "choices": ["up", "down"], "answer": "B"}]
    out = evaluate_multiple_choice(fake, items, passes=4, seed=9)
    assert out["items"] == 3
    assert out["acc"] == pytest.approx(1 / 3)
    assert out["acc_norm"] == pytest.approx(2 / 3)
    assert out["acc_se"] == pytest.approx(math.sqrt((1 / 3) * (2 / 3) / 3))
    assert out["likelihood"] == "exact"
    call = fake.calls[0]
    assert call["passes"] == 4 and call["seed"] == 9
    assert call["pairs"][:2] == [("Question: Is it?\nAnswer:", " no"), ("Question: Is it?\nAnswer:", " absolutely")]
    assert len(call["pairs"]) == 6

    assert evaluate_multiple_choice(FakeScorer(fake.logprobs, stochastic=True), items)["likelihood"] == "elbo"
    one = evaluate_multiple_choice(fake, items, max_items=2)
    assert one["items"] == 2 and one["acc"] == pytest.approx(0.5) and one["acc_norm"] == pytest.approx(1.0)
    with pytest.raises(DataError, match="out of range"):
        evaluate_multiple_choice(fake, [{"question": "q", "choices": ["up", "down"], "answer": 2}])


MC_ITEMS = [
    {"question": "what did the chef cook ?", "choices": ["a meal .", "the guitar .", "a lazy phone ."], "answer": 0},
    {"question": "where is the band ?", "choices": ["at the club .", "at the airport ."], "answer": "A"},
    {"question": "how was the trip ?", "choices": ["terrific .", "monotonous .", "the office ."], "answer": 1},
]


def test_evaluate_multiple_choice_tiny_masked_is_fixed_by_seed(masked_lm):
    first = evaluate_multiple_choice(masked_lm, MC_ITEMS, passes=2, seed=1)
    assert first["likelihood"] == "elbo" and first["items"] == 3
    assert 0 <= first["acc"] <= 1 and 0 <= first["acc_norm"] <= 1
    assert first == evaluate_multiple_choice(masked_lm, MC_ITEMS, passes=2, seed=1)
    assert first == evaluate_multiple_choice(masked_lm, MC_ITEMS, passes=2, seed=1, batch_size=1)


def test_evaluate_multiple_choice_tiny_ar_uses_the_exact_scores(ar_lm):
    pairs = [(choice_prompt(it["question"]), " " + c) for it in MC_ITEMS for c in it["choices"]]
    logprobs = [s["logprob"] for s in ar_lm.score_continuations(pairs)]
    best, worst, start = [], [], 0
    for it in MC_ITEMS:  # the answers the exact scores pick, and the ones they rank last
        scores = logprobs[start : start + len(it["choices"])]
        start += len(it["choices"])
        best.append(scores.index(max(scores)))
        worst.append(scores.index(min(scores)))
    right = evaluate_multiple_choice(ar_lm, [{**it, "answer": b} for it, b in zip(MC_ITEMS, best)])
    wrong = evaluate_multiple_choice(ar_lm, [{**it, "answer": w} for it, w in zip(MC_ITEMS, worst)])
    assert right["likelihood"] == "exact" and right["acc"] == 1.0 and right["acc_se"] == 0.0
    assert wrong["acc"] == 0.0
