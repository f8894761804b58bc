"""`dlms generate --infill` end to end on the tiny runs trained on the built-in corpus: the given
words come back in order in every filled text; misuse is one `error:` line and exit status 2."""
from __future__ import annotations

import pytest

from dlms.cli import main
from tests.conftest import tiny_overrides

TEMPLATE = "the chef ___ the soup , and it was ___:2 ."
GIVEN = ["the chef", " the soup , and it was", "."]


def in_order(text: str, pieces: list[str]) -> bool:
    """Every piece occurs in `text`, each after the one before."""
    at = 0
    for piece in pieces:
        found = text.find(piece, at)
        if found < 0:
            return False
        at = found + len(piece)
    return True


@pytest.mark.parametrize("extra", [[], ["--sampler", "ancestral", "--num_steps", "6"],
                                   ["--sampler", "threshold", "--guidance_scale", "2.0"]])
def test_infill_keeps_the_given_words_in_order(trained_runs, capsys, extra):
    code = main(["generate", "--checkpoint", str(trained_runs["masked"]), "--infill", TEMPLATE, "--num_samples", "3",
                 "--seed", "0", *extra])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    lines = captured.out.splitlines()
    assert len(lines) == 3
    for line in lines:
        assert line.startswith("the chef") and line.endswith(".") and in_order(line, GIVEN), line


def test_blank_tokens_and_show_steps(trained_runs, capsys):
    code = main(["generate", "--checkpoint", str(trained_runs["masked"]), "--infill", "___ chef ___ the soup .",
                 "--blank_tokens", "2", "--num_samples", "2", "--show_steps", "--num_steps", "4", "--seed", "1"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    lines = captured.out.splitlines()
    samples = [line for line in lines if not line.startswith("[step")]
    assert len(samples) == 2 and all(in_order(s, [" chef", " the soup ."]) for s in samples)
    assert any(line.startswith("[step") and " _" in line for line in lines)  # blanks shown while filling


def _one_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:"), err
    return err[0]


@pytest.mark.parametrize("args,message", [
    (["--infill", "the chef cooked the soup ."], "--infill needs at least one blank `___`"),
    (["--infill", "the chef ___:0 the soup ."], "after `___:` comes a number of tokens, at least 1"),
    (["--infill", "the ___ soup", "--prompt", "the chef"], "--infill and --prompt cannot be combined"),
    (["--infill", "the ___ soup", "--seq_len", "16"], "--seq_len does not apply to --infill"),
    (["--blank_tokens", "2"], "--blank_tokens sizes the blanks of --infill"),
    (["--infill", "the ___ soup", "--blank_tokens", "0"], "--blank_tokens must be an integer of at least 1"),
    (["--infill", "the ___:40 soup"], "more than the model's 32 (its training length); shorten --infill"),
])
def test_misuse_is_one_error_line(trained_runs, capsys, args, message):
    assert main(["generate", "--checkpoint", str(trained_runs["masked"]), *args]) == 2
    assert message in _one_error(capsys)


def test_an_autoregressive_run_is_refused(trained_runs, capsys):
    assert main(["generate", "--checkpoint", str(trained_runs["ar"]), "--infill", TEMPLATE]) == 2
    line = _one_error(capsys)
    assert "--infill needs a bidirectional model (masked or gaussian); this run is 'ar'" in line
    assert "method.name=masked" in line


@pytest.fixture(scope="module")
def labelled_run(tmp_path_factory):
    """A tiny masked run trained with the built-in corpus's `review` label."""
    out = tmp_path_factory.mktemp("run-labelled")
    assert main(["train", "--samples", "0", *tiny_overrides(out, "masked", **{"data.label_column": "review"})]) == 0
    return out


def test_infill_with_a_label_or_the_class_it_reads(labelled_run, capsys):
    """With --label every fill is of that class; without one the class is drawn from the
    template (the default); either way the given words stay in order. A bad label is one line."""
    for extra in (["--label", "positive-food"], []):
        code = main(["generate", "--checkpoint", str(labelled_run), "--infill", TEMPLATE, "--num_samples", "2",
                     "--seed", "0", *extra])
        captured = capsys.readouterr()
        assert code == 0, captured.err
        lines = captured.out.splitlines()
        assert len(lines) == 2 and all(in_order(line, GIVEN) for line in lines), lines
    assert main(["generate", "--checkpoint", str(labelled_run), "--infill", TEMPLATE, "--label", "jazz"]) == 2
    assert "unknown label 'jazz' for column 'review'; choose one of: negative-food" in _one_error(capsys)
