"""A DGLM run behind the server: its controls are described, steer generation, and bad
controls or fields that do not apply are 4xx lines."""
from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from dlms.cli import main
from dlms.serving import create_app, load_engine
from tests.unit.test_dglm_pipeline import tiny_config


@pytest.fixture(scope="module")
def client(tmp_path_factory, trained_runs, tiny_encoder_folder):
    folder = tmp_path_factory.mktemp("serve-dglm")
    config = tiny_config(folder, tiny_encoder_folder, trained_runs["ar"])
    assert main(["dglm", "train", "--config", str(config)]) == 0
    run = folder / "run"
    assert main(["dglm", "train-classifier", "--run", str(run), "--data", "builtin:300", "--label", "sentiment"]) == 0
    engines = {"dglm": load_engine("dglm", str(run), "cpu"), "masked": load_engine("masked", str(trained_runs["masked"]))}
    with TestClient(create_app(engines)) as c:
        yield c


def test_a_dglm_run_describes_its_controls_and_generates_steered(client):
    info = client.get("/v1/model", params={"name": "dglm"}).json()
    assert info["kind"] == "dglm" and info["controls"] == {"sentiment": ["negative", "positive"]}
    assert info["defaults"]["steps"] == 4 and info["parameters"] > 0
    body = {"model": "dglm", "prompt": "the food", "num_samples": 2, "seed": 1, "control": {"sentiment": "positive"},
            "guidance": 5.0, "steps": 3}
    first = client.post("/v1/generate", json=body)
    assert first.status_code == 200, first.text
    assert len(first.json()["texts"]) == 2 and first.json()["seed"] == 1
    assert client.post("/v1/generate", json=body).json()["texts"] == first.json()["texts"]  # the seed decides
    with client.stream("POST", "/v1/generate", json={**body, "stream": True}) as answer:
        text = "".join(answer.iter_text())
    names = [line.split(": ", 1)[1] for line in text.splitlines() if line.startswith("event: ")]
    assert names == ["step", "done"]
    done = json.loads(text.strip().split("\n\n")[-1].split("data: ", 1)[1])
    assert done["texts"] == first.json()["texts"]


@pytest.mark.parametrize("body,words", [
    ({"sampler": "ddim"}, "sampler does not apply to a DGLM run"),
    ({"length": 8}, "length does not apply"),
    ({"control": {"colour": "red"}}, "no classifier for 'colour'"),
    ({"control": {"sentiment": "angry"}}, "no value 'angry'"),
    ({"steps": 0}, "steps must be"),
    ({"guidance": -1.0}, "guidance"),
    ({"prompt": "the food was " * 20}, "longest prefix"),
])
def test_bad_dglm_requests_are_one_line_4xx(client, body, words):
    answer = client.post("/v1/generate", json={"model": "dglm", **body})
    assert answer.status_code == 422, answer.text
    assert words in answer.json()["error"] and "\n" not in answer.json()["error"]


def test_a_control_sent_to_a_diffusion_run_is_refused(client):
    answer = client.post("/v1/generate", json={"model": "masked", "control": {"sentiment": "positive"}})
    assert answer.status_code == 422 and "DGLM" in answer.json()["error"]
