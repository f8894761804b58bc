"""The lm-evaluation-harness adapter on tiny trained runs: scores match score_continuations,
rolling log-likelihoods, stop strings, and an end-to-end lm_eval run on a local task."""
from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("lm_eval")

from lm_eval.api.instance import Instance

from dlms.errors import DlmsError
from dlms.eval.lm_eval_adapter import DlmsLM

PAIRS = [("the chef", " cooked a meal"), ("", "the market was busy"), ("a long day", " ended"), ("the chef", " slept")]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from dlms.cli import main
    from tests.conftest import tiny_overrides

    out = {}
    for method in ("masked", "ar"):
        run = tmp_path_factory.mktemp(f"lm-eval-{method}") / "m"
        assert main(["train", "--samples", "0", *tiny_overrides(run, method, steps=4)]) == 0
        out[method] = run
    return out


@pytest.fixture(scope="module")
def adapters(runs):
    # numbers as strings, and lm-eval's own extras, as its command line hands them over
    return {m: DlmsLM.create_from_arg_string(f"checkpoint={run},passes='3',seed='5',steps='4'",
                                             {"batch_size": "2", "max_batch_size": None, "device": "cpu"})
            for m, run in runs.items()}


def _requests(kind, args_list):
    return [Instance(kind, {}, args, i) for i, args in enumerate(args_list)]


@pytest.mark.parametrize("method", ["masked", "ar"])
def test_loglikelihood_matches_score_continuations(adapters, method):
    adapter = adapters[method]
    assert (adapter.passes, adapter.seed, adapter.batch_size, adapter.steps) == (3, 5, 2, 4)
    got = adapter.loglikelihood(_requests("loglikelihood", PAIRS))
    want = adapter.lm.score_continuations(PAIRS, passes=3, seed=5)
    assert [lp for lp, _ in got] == [w["logprob"] for w in want]
    assert all(type(greedy) is bool for _, greedy in got)
    assert all(math.isfinite(lp) and lp < 0 for lp, _ in got)
    if method == "masked":
        assert not any(greedy for _, greedy in got)


def test_model_args_are_checked(runs):
    adapter = DlmsLM(checkpoint=str(runs["ar"]), batch_size="auto", max_gen_tokens="7.0")
    assert adapter.batch_size == adapter.lm.cfg.eval.batch_size and adapter.max_gen_tokens == 7
    assert adapter.passes == adapter.lm.cfg.eval.elbo_passes
    with pytest.raises(DlmsError, match="passes"):
        DlmsLM(checkpoint=str(runs["ar"]), passes="two")
    with pytest.raises(DlmsError, match="unknown model_args.*pases"):
        DlmsLM(checkpoint=str(runs["ar"]), pases=2)
    with pytest.raises(DlmsError, match="checkpoint"):
        DlmsLM()


@pytest.mark.parametrize("method", ["masked", "ar"])
def test_loglikelihood_rolling(adapters, method):
    adapter = adapters[method]
    long_text = " ".join(["the chef cooked a meal for the market"] * 12)  # several windows of 32 tokens
    texts = ["the market was busy", long_text, ""]
    got = adapter.loglikelihood_rolling(_requests("loglikelihood_rolling", [(t,) for t in texts]))
    assert len(got) == 3 and all(isinstance(x, float) for x in got)
    assert all(math.isfinite(x) and x < 0 for x in got[:2]) and got[2] == 0.0
    assert got[1] < got[0]
    if method == "ar":  # exact: a text that fits is the continuation of an empty context
        assert got[0] == pytest.approx(adapter.loglikelihood(_requests("loglikelihood", [("", texts[0])]))[0][0],
                                       abs=1e-4)


@pytest.mark.parametrize("method", ["masked", "ar"])
def test_generate_until_stops_at_stop_string(adapters, method):
    adapter = adapters[method]
    context = "the chef"
    free = adapter.generate_until(_requests("generate_until", [(context, {"until": [], "max_gen_toks": 12})]))[0]
    assert isinstance(free, str)
    # a stop string inside the text, after its start where the text allows (then the cut is not empty)
    later = [free[k:k + 2] for k in range(1, len(free) - 1) if free[k:k + 2].strip() and free.find(free[k:k + 2]) > 0]
    stop = (later or [ch for ch in free if not ch.isspace()] or ["the"])[0]
    cut = adapter.generate_until(_requests("generate_until", [(context, {"until": [stop], "max_gen_toks": 12})]))[0]
    assert stop not in cut
    assert cut == free.split(stop, 1)[0]  # same seed, same canvas: the same text, cut at the stop string
    long_prompt = " ".join(["the chef cooked a meal"] * 20)  # longer than the model's window: cut from the left
    outs = adapter.generate_until(_requests("generate_until", [(long_prompt, {"until": "\n", "do_sample": True}),
                                                               (context, {"until": ["\n"], "temperature": 0.7})]))
    assert len(outs) == 2 and all(isinstance(o, str) and "\n" not in o for o in outs)


def test_simple_evaluate_on_local_task(runs, tmp_path, monkeypatch):
    import lm_eval
    from lm_eval.tasks import TaskManager

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rows = [{"question": "the chef", "choices": [" cooked a meal", " flew away", " was blue"], "answer": 0},
            {"question": "the market was", "choices": [" busy", " a number", " seven"], "answer": 0},
            {"question": "a long day", "choices": [" ended", " jumped", " of"], "answer": 0},
            {"question": "she walked to the", "choices": [" market", " blue", " ran"], "answer": 0}]
    data = tmp_path / "tiny_mc.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "tiny_mc.yaml").write_text(
        "task: dlms_tiny_mc\n"
        "dataset_path: json\n"
        "dataset_kwargs:\n"
        f"  data_files:\n    test: {json.dumps(str(data))}\n"
        f"  cache_dir: {json.dumps(str(tmp_path / 'hf-datasets'))}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        "doc_to_text: '{{question}}'\n"
        "doc_to_choice: '{{choices}}'\n"
        "doc_to_target: '{{answer}}'\n"
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n")
    results = lm_eval.simple_evaluate(model="dlms", model_args=f"checkpoint={runs['masked']},passes=2",
                                      tasks=["dlms_tiny_mc"], task_manager=TaskManager(include_path=str(tmp_path)),
                                      batch_size=4, device="cpu", log_samples=False)
    acc = results["results"]["dlms_tiny_mc"]["acc,none"]
    assert 0.0 <= acc <= 1.0
    assert results["config"]["dlms_method"] == "masked"
