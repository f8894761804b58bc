"""The HTTP API in-process (FastAPI's test client): every endpoint, every family, streaming order
and completeness, batching that changes nobody's texts, a full queue, and bad input as 4xx."""
from __future__ import annotations

import json
import threading
import time

import pytest
from fastapi.testclient import TestClient

from dlms.generation import GenerationRequest, generate
from dlms.samplers import SAMPLERS
from dlms.serving import ServeLimits, create_app

FAMILIES = ("masked", "ar", "gaussian", "block")


@pytest.fixture(scope="module")
def client(engines):
    with TestClient(create_app(engines, ServeLimits(max_length=64, max_steps=64, max_samples=4))) as c:
        yield c


def events(text: str) -> list[tuple[str, dict]]:
    """Server-Sent Events -> [(event, data)]."""
    out = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        out.append((lines["event"], json.loads(lines["data"])))
    return out


def test_health_models_page_and_docs_answer(client, engines):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["models"] == list(engines)
    models = client.get("/v1/models").json()["models"]
    assert [m["name"] for m in models] == list(engines)
    masked = client.get("/v1/model", params={"name": "masked"}).json()
    assert masked["method"] == "masked" and masked["parameters"] > 0 and masked["seq_len"] == 32
    assert set(masked["samplers"]) == {n for n in SAMPLERS.names() if "masked" in SAMPLERS.get(n).method_names}
    assert "steps" in masked["samplers"]["ancestral"] and "steps" not in masked["samplers"]["threshold"]
    assert masked["tokenizer"]["vocab_size"] > 0 and masked["limits"]["max_length"] == 64
    assert client.get("/v1/model", params={"name": "labelled"}).json()["labels"] == ["negative", "positive"]
    assert client.get("/v1/model").json()["name"] == list(engines)[0]
    missing = client.get("/v1/model", params={"name": "nope"})
    assert missing.status_code == 404 and "nope" in missing.json()["error"]
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"] and "/static/app.js" in page.text
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/docs").status_code == 200
    assert "/v1/generate" in client.get("/openapi.json").json()["paths"]


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_generates_the_texts_the_python_api_gives(client, engines, family):
    body = {"model": family, "prompt": "the cat", "length": 24, "num_samples": 2, "seed": 5}
    if family != "ar":
        body["steps"] = 6
    answer = client.post("/v1/generate", json=body)
    assert answer.status_code == 200, answer.text
    out = answer.json()
    assert len(out["texts"]) == 2 and out["tokens"] > 0 and out["tokens_per_second"] > 0
    assert out["network_calls"] >= 1 and out["options"]["sampler"] in engines[family].samplers
    lm = engines[family].lm
    alone = generate(lm, GenerationRequest(prompt="the cat", length=24, num_samples=2, seed=5,
                                           steps=body.get("steps")))
    assert out["texts"] == alone  # one code path: the same texts as `dlms generate` gets


@pytest.mark.parametrize("family", ("masked", "gaussian"))
def test_infill_through_the_api(client, family):
    out = client.post("/v1/generate", json={"model": family, "infill": "the ___ sat on the ___:2 .", "seed": 1,
                                            "steps": 4})
    assert out.status_code == 200, out.text
    text = out.json()["texts"][0]
    assert text.startswith("the") and text.rstrip().endswith(".")


@pytest.mark.parametrize("family", FAMILIES)
def test_streaming_sends_every_step_in_order_then_the_result(client, family):
    body = {"model": family, "prompt": "the", "length": 16, "seed": 2, "stream": True}
    if family != "ar":
        body["steps"] = 5
    with client.stream("POST", "/v1/generate", json=body) as answer:
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/event-stream")
        got = events("".join(answer.iter_text()))
    names = [name for name, _ in got]
    assert names[-1] == "done" and set(names[:-1]) == {"step"}
    steps = [data["step"] for _, data in got[:-1]]
    done = got[-1][1]
    assert steps == list(range(len(steps))) and steps[-1] == done["steps"]  # every step, in order
    first, last = got[0][1], got[-2][1]
    assert first["given"] and all(t is None for i, t in enumerate(first["rows"][0]["tokens"]) if i not in first["given"])
    assert None not in last["rows"][0]["tokens"]  # nothing left masked
    assert any(data["rows"][0]["changed"] for _, data in got[1:-1])
    shown = "".join(t for t in last["rows"][0]["tokens"] if t and t != "\u00b6").strip()
    assert shown.replace(" ", "").startswith(done["texts"][0].replace(" ", "")[:3])
    confidences = [c for c in last["rows"][0]["confidence"] if c is not None]  # every family has one
    assert confidences and all(0.0 <= c <= 1.0 for c in confidences)


def test_concurrent_requests_share_a_batch_and_get_the_texts_they_get_alone(engines):
    limits = ServeLimits(batch_window_s=0.3, max_samples=4)
    bodies = [{"model": "masked", "prompt": p, "length": 24, "steps": 6, "num_samples": n, "seed": s}
              for p, n, s in (("the cat", 2, 1), ("the dog", 1, 2), (None, 3, 1), ("the cat", 1, 9))]
    for body in bodies:
        if body["prompt"] is None:
            del body["prompt"]
    with TestClient(create_app(engines, limits)) as client:
        alone = [client.post("/v1/generate", json=b).json() for b in bodies]
        assert all(a["batch_requests"] == 1 for a in alone)
        together: list = [None] * len(bodies)

        def send(i):
            together[i] = client.post("/v1/generate", json=bodies[i]).json()

        threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert max(t["batch_requests"] for t in together) >= 2  # some shared a call
    assert [t["texts"] for t in together] == [a["texts"] for a in alone]


def blocked_app(engines, **limits):
    """An app whose worker holds its first batch until `release` is set."""
    release = threading.Event()
    engine = engines["masked"]

    class Held:
        name, info, prepare, batch_key, rows, first_frame = (engine.name, engine.info, engine.prepare,
                                                             engine.batch_key, engine.rows, engine.first_frame)

        def run(self, works, watchers):
            release.wait(10)
            return engine.run(works, watchers)

    return create_app({"masked": Held()}, ServeLimits(**limits)), release


def test_a_full_queue_answers_429_with_retry_after_and_never_hangs(engines):
    app, release = blocked_app(engines, max_queue=1, batching=False)
    answers: list = []
    with TestClient(app) as client:
        def send():
            answers.append(client.post("/v1/generate", json={"steps": 2, "length": 8}))

        first = threading.Thread(target=send)
        first.start()
        time.sleep(0.3)  # the worker holds it
        second = threading.Thread(target=send)
        second.start()
        time.sleep(0.3)  # it waits in the queue, which is now full
        began = time.perf_counter()
        refused = client.post("/v1/generate", json={"steps": 2, "length": 8})
        assert time.perf_counter() - began < 2
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
        assert "queue is full" in refused.json()["error"]
        release.set()
        first.join()
        second.join()
    assert [a.status_code for a in answers] == [200, 200]


def test_a_request_that_waits_too_long_is_answered_503(engines):
    app, release = blocked_app(engines, queue_timeout_s=0.4, batching=False)
    with TestClient(app) as client:
        holder = threading.Thread(target=lambda: client.post("/v1/generate", json={"steps": 2, "length": 8}))
        holder.start()
        time.sleep(0.2)
        late = client.post("/v1/generate", json={"steps": 2, "length": 8})
        assert late.status_code == 503 and "Retry-After" in late.headers
        release.set()
        holder.join()
        assert client.get("/health").json()["status"] == "ok"


BAD = [
    ("{", 400, "not valid JSON"),
    ("[" * 30000 + "]" * 30000, 400, "nests too deeply"),
    ("[1, 2]", 422, "JSON object"),
    ('"text"', 422, "JSON object"),
    ('{"prompt": 3}', 422, "prompt"),
    ('{"steps": "many"}', 422, "steps"),
    ('{"steps": 2.5}', 422, "steps"),
    ('{"num_samples": true}', 422, "num_samples"),
    ('{"colour": "red"}', 422, "unknown field 'colour'"),
    ('{"top_p": 2}', 422, "top_p"),
    ('{"temperature": -1}', 422, "temperature"),
    ('{"temperature": NaN}', 422, "temperature"),
    ('{"steps": 0}', 422, "steps"),
    ('{"num_samples": 0}', 422, "num_samples"),
    ('{"num_samples": 99}', 422, "max_samples"),
    ('{"length": 100000}', 422, "max_length"),
    ('{"length": 60}', 422, "length"),  # above the model's own maximum (32), within the server's
    ('{"length": 1}', 422, "length"),
    ('{"sampler": "nope"}', 422, "unknown sampler"),
    ('{"sampler": "ddpm"}', 422, "ddpm"),
    ('{"sampler": "threshold", "steps": 4}', 422, "steps does not apply"),
    ('{"label": "happy"}', 422, "label"),
    ('{"prompt": "' + "word " * 60 + '", "length": 16}', 422, "prompt"),
    ('{"infill": "a ___ b", "prompt": "x"}', 422, "infill and prompt"),
    ('{"infill": "no blanks here"}', 422, "blank"),
    ('{"blank_tokens": 2}', 422, "blank_tokens"),
    ('{"control": {"sentiment": "positive"}}', 422, "control"),
    ('{"model": "nope"}', 404, "nope"),
    ('{"seed": -1}', 422, "seed"),
    ('{"cache": "everything"}', 422, "cache"),
]


@pytest.mark.parametrize("body,status,words", BAD)
def test_bad_input_is_a_one_line_4xx(client, body, status, words):
    answer = client.post("/v1/generate", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == status, answer.text
    message = answer.json()["error"]
    assert words in message and "\n" not in message


def test_other_bad_requests_are_4xx(client):
    assert client.get("/v1/generate").status_code == 405
    assert client.get("/nowhere").status_code == 404 and "error" in client.get("/nowhere").json()
    huge = client.post("/v1/generate", content=b"{" + b" " * 70000 + b"}")
    assert huge.status_code == 413
    assert client.post("/v1/generate", content=b"\xff\xfe\x00").status_code == 400
    labelled = client.post("/v1/generate", json={"model": "labelled", "label": "positive", "guidance": 2.0,
                                                 "steps": 4, "length": 16})
    assert labelled.status_code == 200, labelled.text
