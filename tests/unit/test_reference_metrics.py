"""The figures of responses against references (dlms/eval/references.py) on hand-made examples."""
from __future__ import annotations

import pytest

from dlms.eval.references import (bootstrap_bleu_se, group_references, parse_meaning_representation,
                                  reference_figures, slot_figures, slot_mentioned, word_count)

MR_A = "name[The Eagle], eatType[coffee shop], food[French], familyFriendly[yes]"
MR_B = "name[Aromi], area[city centre], customer rating[5 out of 5]"


def test_group_references_keeps_first_appearance_order_and_row_order():
    rows = [("b", "b1"), ("a", "a1"), ("b", "b2"), ("c", "c1"), ("a", "a2")]
    grouped = group_references(rows)
    assert list(grouped) == ["b", "a", "c"]
    assert grouped == {"b": ["b1", "b2"], "a": ["a1", "a2"], "c": ["c1"]}
    # any hashable key: (prompt, task) pairs stay apart by task
    assert group_references([(("p", None), "x"), (("p", "t"), "y"), (("p", None), "z")]) == \
        {("p", None): ["x", "z"], ("p", "t"): ["y"]}


def test_identical_text_scores_100_bleu_and_full_rouge_with_one_or_many_references():
    refs = [["the eagle is a french coffee shop .", "a coffee shop called the eagle serves french food ."],
            ["aromi in the city centre is rated 5 out of 5 ."]]
    prompts = ["p1", "p2"]
    first = reference_figures(prompts, [refs[0][0], refs[1][0]], refs)
    second = reference_figures(prompts, [refs[0][1], refs[1][0]], refs)  # the other reference of prompt 1
    for figures in (first, second):
        assert figures["bleu"] == pytest.approx(100.0)
        assert figures["rouge1"] == pytest.approx(1.0) and figures["rougeL"] == pytest.approx(1.0)
    worse = reference_figures(prompts, ["the eagle is a shop .", "nothing like it"], refs)
    assert 0.0 < worse["bleu"] < 100.0 and 0.0 < worse["rougeL"] < 1.0


def test_lengths_empty_share_and_counts():
    refs = [["one two three four", "one two"], ["a b c d e f"]]
    figures = reference_figures(["p", "q"], ["one two three", "   "], refs)
    assert figures["items"] == 2 and figures["references"] == 3
    assert figures["mean_words"] == pytest.approx((3 + 0) / 2)
    # the mean over prompts of each prompt's mean reference length: ((4 + 2) / 2 + 6) / 2
    assert figures["reference_mean_words"] == pytest.approx(4.5)
    assert figures["empty_share"] == pytest.approx(0.5)
    assert "slot_coverage" not in figures  # the prompts are not meaning representations
    assert word_count("  a\tb\nc ") == 3


def test_bleu_has_a_bootstrap_standard_error_over_prompts():
    """Identical responses leave nothing to resample (SE 0); mixed ones give a seeded SE that is
    larger when fewer prompts carry the score, and one prompt has none."""
    refs = [[f"the shop number {i} serves french food in the city centre ."] for i in range(12)]
    perfect = [r[0] for r in refs]
    assert reference_figures([f"p{i}" for i in range(12)], perfect, refs)["bleu_se"] == pytest.approx(0.0)
    half = [r[0] if i % 2 else "nothing at all" for i, r in enumerate(refs)]
    se = bootstrap_bleu_se(half, refs)
    assert se > 1.0 and bootstrap_bleu_se(half, refs) == se  # seeded
    assert bootstrap_bleu_se(half * 8, refs * 8) < se  # more prompts: a tighter figure
    assert bootstrap_bleu_se(half[:1], refs[:1]) == 0.0


def test_reference_figures_refuses_mismatched_or_empty_input():
    with pytest.raises(ValueError, match="2 prompts, 1 responses"):
        reference_figures(["p", "q"], ["x"], [["x"], ["y"]])
    with pytest.raises(ValueError):
        reference_figures([], [], [])
    with pytest.raises(ValueError, match="no reference"):
        reference_figures(["p"], ["x"], [[]])


def test_parse_meaning_representation():
    assert parse_meaning_representation(MR_B) == [("name", "Aromi"), ("area", "city centre"),
                                                  ("customer rating", "5 out of 5")]
    assert parse_meaning_representation("name[The Vaults], eatType[pub] =") == [("name", "The Vaults"),
                                                                              ("eatType", "pub")]
    for text in ("the eagle serves french food", "name[A] and more", "name[A] food[B]", "", "[A]"):
        assert parse_meaning_representation(text) is None, text


@pytest.mark.parametrize("slot, value, text, expected", [
    ("name", "The Eagle", "THE EAGLE is nice", True),
    ("name", "The Eagle", "The Eagles play", True),            # from a word start on
    ("eatType", "pub", "a republic of food", False),           # not inside a word
    ("eatType", "pub", "two pubs near here", True),
    ("eatType", "coffee shop", "a coffee-shop by the river", True),
    ("eatType", "coffee shop", "a small café", True),
    ("eatType", "coffee shop", "a small restaurant", False),
    ("priceRange", "moderate", "moderately priced food", True),
    ("priceRange", "high", "it is expensive", False),          # paraphrases do not count
    ("priceRange", "£20-25", "meals cost £20-25 there", True),
    ("area", "city centre", "in the city-centre", True),
    ("area", "city centre", "in the centre of the city", False),
    ("customer rating", "5 out of 5", "rated 5 out of 5", True),
    ("familyFriendly", "yes", "a family-friendly place", True),
    ("familyFriendly", "yes", "kids are welcome", True),
    ("familyFriendly", "no", "not suitable for children", True),  # the attribute is mentioned; polarity unchecked
    ("familyFriendly", "no", "a quiet place", False),
    ("familyFriendly", "yes", "familiar faces", False),
    ("familyFriendly", "yes", "good for families", True),
    ("near", "", "anything", True),                             # an empty value has nothing to say
])
def test_slot_mentioned(slot, value, text, expected):
    assert slot_mentioned(slot, value, text) is expected


def test_slot_figures_count_complete_responses_and_mentioned_slots():
    responses = [
        "The Eagle is a family friendly French coffee shop.",   # 4 of 4
        "The Eagle is a coffee shop.",                          # 2 of 4 (no food, no family)
        "Aromi is in the city centre.",                         # 2 of 3 (no rating)
    ]
    figures = slot_figures([MR_A, MR_A, MR_B], responses)
    assert figures == {"slot_coverage": pytest.approx(1 / 3), "slot_recall": pytest.approx(8 / 11),
                       "slot_coverage_se": pytest.approx((1 / 3 * 2 / 3 / 3) ** 0.5)}
    assert slot_figures([MR_A, "not an mr"], responses[:2]) is None  # every prompt must be an MR
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        slot_figures([MR_A, MR_B], responses[:1])


def test_reference_figures_add_slot_figures_for_meaning_representations():
    refs = [["The Eagle is a French coffee shop for families.", "The Eagle is a coffee shop."],
            ["Aromi is in the city centre, rated 5 out of 5."]]
    figures = reference_figures([MR_A, MR_B], ["The Eagle is a coffee shop.", "Aromi is in the city centre."], refs)
    assert figures["slot_coverage"] == pytest.approx(0.0)
    assert figures["slot_recall"] == pytest.approx((2 + 2) / 7)
    assert figures["reference_slot_coverage"] == pytest.approx(2 / 3)  # the second reference of MR_A misses two
