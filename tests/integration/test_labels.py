"""Class conditioning end to end: labels from the data, the null class, guidance at sampling."""
from __future__ import annotations

import json

import pytest
import torch

from dlms import DiffusionLM
from dlms.cli import main
from dlms.errors import DlmsError
from tests.conftest import tiny_overrides


@pytest.fixture(scope="module")
def labelled_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("labelled")
    assert main(["train", "--samples", "0", *tiny_overrides(out, steps=8), "data.label_column=sentiment"]) == 0
    return out


def test_labels_set_the_number_of_classes(labelled_run):
    lm = DiffusionLM.load_checkpoint(labelled_run)
    assert lm.model.spec.num_classes == 2 and lm.label_names["sentiment"] == ["negative", "positive"]
    cfg = json.loads((labelled_run / "checkpoint" / "trainer_state.json").read_text())
    assert cfg["label_names"]["sentiment"] == ["negative", "positive"]


def test_guidance_scale_changes_samples_and_one_is_plain_conditional(labelled_run, capsys):
    lm = DiffusionLM.load_checkpoint(labelled_run)
    plain = lm.sample_ids(num_samples=4, label="positive", guidance=1.0, seed=0, steps=6)
    again = lm.sample_ids(num_samples=4, label="positive", guidance=1.0, seed=0, steps=6)
    strong = lm.sample_ids(num_samples=4, label="positive", guidance=8.0, seed=0, steps=6)
    assert torch.equal(plain, again) and not torch.equal(plain, strong)
    assert main(["generate", "--checkpoint", str(labelled_run), "--label", "negative", "--guidance_scale", "3",
                 "--num_samples", "2"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2


def test_unknown_label_names_the_choices(labelled_run):
    lm = DiffusionLM.load_checkpoint(labelled_run)
    with pytest.raises(DlmsError, match="negative, positive"):
        lm.sample(label="neutral")


def test_one_label_per_sample_matches_single_label_runs(labelled_run):
    lm = DiffusionLM.load_checkpoint(labelled_run)
    mixed = lm.sample_ids(num_samples=4, label=["negative", "positive", "negative", "positive"], seed=0, steps=6)
    # the same noise with one class for every row gives the same rows where the classes agree
    neg = lm.sample_ids(num_samples=4, label="negative", seed=0, steps=6)
    pos = lm.sample_ids(num_samples=4, label="positive", seed=0, steps=6)
    assert torch.equal(mixed[0], neg[0]) and torch.equal(mixed[1], pos[1])
    assert lm.balanced_labels(5) == ["negative", "positive", "negative", "positive", "negative"]
    with pytest.raises(DlmsError, match="one label or one per sample"):
        lm.sample_ids(num_samples=3, label=["negative", "positive"])


def test_eval_draws_every_review_label_and_scores_it(tmp_path, capsys):
    out = tmp_path / "review"
    assert main(["train", "--samples", "0", *tiny_overrides(out, steps=4), "data.label_column=review"]) == 0
    lm = DiffusionLM.load_checkpoint(out)
    assert lm.label_names["review"][:2] == ["negative-food", "negative-music"] and lm.model.spec.num_classes == 10
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(out), "--passes", "0", "--num_samples", "10"]) == 0
    results = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "val_nll" not in results  # --passes 0 skips the likelihood
    assert results["labels"] == "balanced" and 0.0 <= results["label_accuracy"] <= results["grammatical"]
    assert main(["eval", "--checkpoint", str(out), "--passes", "0", "--num_samples", "4", "--label", "none",
                 "--temperature", "0.5"]) == 0
    results = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert results["labels"] == "none" and results["temperature"] == 0.5 and "label_accuracy" not in results
