"""The lm-evaluation-harness adapter on tiny trained runs: scores match score_continuations,
rolling log-likelihoods, stop strings, and an end-to-end lm_eval run on a local task."""
from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("lm_eval")

from lm_eval.api.instance import Instance

from dlms.errors import DlmsError
from dlms.eval.lm_eval_adapter import DlmsLM, with_default_device

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
    # steps: denoising steps, an option of the masked samplers (an AR run takes none)
    return {m: DlmsLM.create_from_arg_string(f"checkpoint={run},passes='3',seed='5'" + (",steps='4'" if m == "masked" else ""),
                                             {"batch_size": "2", "max_batch_size": None, "device": "cpu"})
            for m, run in runs.items()}


def _requests(kind, args_list):
    return [Instance(kind, {}, args, i) for i, args in enumerate(args_list)]


@pytest.mark.parametrize("method", ["masked", "ar"])
def test_loglikelihood_matches_score_continuations(adapters, method):
    adapter = adapters[method]
    assert (adapter.passes, adapter.seed, adapter.batch_size) == (3, 5, 2)
    assert adapter.steps == (4 if method == "masked" else None)
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


def write_tiny_task(folder) -> str:
    """A 4-question multiple-choice lm-eval task read from a local jsonl file; returns its name."""
    rows = [{"question": "the chef", "choices": [" cooked a meal", " flew away", " was blue"], "answer": 0},
            {"question": "the market was", "choices": [" busy", " a number", " seven"], "answer": 0},
            {"question": "a long day", "choices": [" ended", " jumped", " of"], "answer": 0},
            {"question": "she walked to the", "choices": [" market", " blue", " ran"], "answer": 0}]
    data = folder / "tiny_mc.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "tiny_mc.yaml").write_text(
        "task: dlms_tiny_mc\n"
        "dataset_path: json\n"
        "dataset_kwargs:\n"
        f"  data_files:\n    test: {json.dumps(str(data))}\n"
        f"  cache_dir: {json.dumps(str(folder / 'hf-datasets'))}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        "doc_to_text: '{{question}}'\n"
        "doc_to_choice: '{{choices}}'\n"
        "doc_to_target: '{{answer}}'\n"
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n")
    return "dlms_tiny_mc"


def test_simple_evaluate_on_local_task(runs, tmp_path, monkeypatch):
    import lm_eval
    from lm_eval.tasks import TaskManager

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    task = write_tiny_task(tmp_path)
    results = lm_eval.simple_evaluate(model="dlms", model_args=f"checkpoint={runs['masked']},passes=2",
                                      tasks=[task], task_manager=TaskManager(include_path=str(tmp_path)),
                                      batch_size=4, device="cpu", log_samples=False)
    acc = results["results"]["dlms_tiny_mc"]["acc,none"]
    assert 0.0 <= acc <= 1.0
    assert results["config"]["dlms_method"] == "masked"


def test_default_device_is_the_one_dlms_picks(tmp_path):
    from dlms.devices import resolve_device

    picked = str(resolve_device("auto"))  # cpu on a machine without a GPU
    evaluate = ["--model", "dlms", "--tasks", "t"]
    assert with_default_device(evaluate) == [*evaluate, "--device", picked]
    assert with_default_device(["run", *evaluate]) == ["run", *evaluate, "--device", picked]
    for given in (["--device", "cuda:1"], ["--device=cpu"], ["--dev", "cpu"]):  # argparse takes a unique prefix
        assert with_default_device([*evaluate, *given]) == [*evaluate, *given]
    for nothing_to_run in ([], ["run"], ["ls", "tasks"], ["validate", "--tasks", "t"], ["--help"], ["run", "-h"]):
        assert with_default_device(nothing_to_run) == nothing_to_run
    with_device, without = tmp_path / "with.yaml", tmp_path / "without.yaml"
    with_device.write_text("model: dlms\ndevice: cuda:3\n")
    without.write_text("model: dlms\n")
    for form in (["--config", str(with_device)], [f"--config={with_device}"], ["-C", str(with_device)],
                 [f"-C{with_device}"]):
        assert with_default_device(form) == form
    assert with_default_device(["-C", str(without)]) == ["-C", str(without), "--device", picked]


def test_command_line_runs_on_this_machine_without_device(runs, tmp_path, monkeypatch):
    """`dlms-lm-eval` with no --device: lm-eval alone would ask for cuda:0."""
    from dlms.eval.lm_eval_adapter import main

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    task = write_tiny_task(tmp_path)
    common = ["--tasks", task, "--include_path", str(tmp_path), "--batch_size", "4"]
    assert main(["--model", "dlms", "--model_args", f"checkpoint={runs['ar']}", *common,
                 "--output_path", str(tmp_path / "out")]) == 0
    results = [json.loads(p.read_text()) for p in (tmp_path / "out").rglob("results*.json")]
    assert len(results) == 1 and 0.0 <= results[0]["results"][task]["acc,none"] <= 1.0


def test_a_device_in_model_args_wins_over_lm_evals_device(runs):
    # lm-eval's command line always passes a device; without this it failed with "multiple values".
    adapter = DlmsLM.create_from_arg_string(f"checkpoint={runs['ar']},device=cpu",
                                            {"batch_size": 1, "max_batch_size": None, "device": "cuda:0"})
    assert adapter.lm.device.type == "cpu"
    adapter = DlmsLM.create_from_arg_obj({"checkpoint": str(runs["ar"])}, {"device": "cpu", "batch_size": None})
    assert adapter.lm.device.type == "cpu"
