"""1,000 random and malformed requests against a live `dlms serve` on the loopback address:
no answer is a server error, and the same process still answers /health afterwards."""
from __future__ import annotations

import json
import random
from collections import Counter

import httpx

from dlms.serving.schema import GenerateBody
from tests.serving.live import live_server

REQUESTS = 1000
FIELDS = list(GenerateBody.model_fields)
WORDS = ["the", "cat", "___", "___:2", "___:0", "___:99", "sat", ".", "\u00e9t\u00e9", "\U0001f600", "\x00", "<eos>",
         "{", "}", "\\", "\n"]


def random_value(rng: random.Random, depth: int = 0):
    kind = rng.randrange(12)
    if kind == 0:
        return rng.randint(-5, 40)
    if kind == 1:
        return rng.choice([0, 1, 2, -1, 10**9, 2**63, -(2**70)])
    if kind == 2:
        return rng.choice([0.0, 0.5, 1.0, -0.5, 1e308, 1e-320, 3.7])
    if kind == 3:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 8)))
    if kind == 4:
        return rng.choice([True, False, None])
    if kind == 5 and depth < 2:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    if kind == 6 and depth < 2:
        return {rng.choice(FIELDS + ["x"]): random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))}
    if kind == 7:
        return rng.choice(["ancestral", "cached", "confidence", "threshold", "ar", "ddpm", "ddim", "none", "prefix",
                           "dual", "prob", "margin", "entropy", "random", "drawn", "frontier", "auto", "masked", "ar",
                           "positive", "nope"])
    if kind == 8:
        return "x" * rng.choice([0, 1, 5000])
    return rng.randint(1, 16)


def random_body(rng: random.Random) -> dict:
    body = {}
    for field in rng.sample(FIELDS, rng.randint(0, 6)):
        body[field] = random_value(rng)
    if rng.random() < 0.3:
        body[rng.choice(["foo", "Prompt", "", "steps "])] = random_value(rng)
    if rng.random() < 0.5:  # mostly small work, so that many requests are served, not just refused
        body["steps"] = rng.randint(1, 6)
        body["length"] = rng.randint(2, 24)
        body.pop("num_samples", None)
    body["stream"] = rng.random() < 0.15
    return body


def malformed(rng: random.Random) -> bytes:
    kind = rng.randrange(7)
    if kind == 0:
        return json.dumps(random_body(rng)).encode()[: rng.randint(0, 30)]  # cut short
    if kind == 1:
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 64)))
    if kind == 2:
        return b"[" * 30000 + b"]" * 30000  # nesting deeper than a JSON parser recurses
    if kind == 3:
        return b'{"prompt": "' + b"a" * 70000 + b'"}'  # over the body limit
    if kind == 4:
        return b'{"steps": 1e999, "temperature": -Infinity}'
    if kind == 5:
        return b'{"prompt": "\\ud800"}'  # a lone surrogate
    return b'{"prompt": "the", "prompt": 5}'


def test_a_thousand_random_requests_get_no_server_error(serving_runs):
    rng = random.Random(0)
    checkpoints = [f"{name}={serving_runs[name]}" for name in ("masked", "ar", "gaussian", "labelled")]
    statuses: Counter = Counter()
    with live_server(checkpoints, "--max_length", "32", "--max_steps", "16", "--max_samples", "3",
                     "--max_queue", "16") as (url, process):
        with httpx.Client(base_url=url, timeout=60) as client:
            for i in range(REQUESTS):
                roll = rng.random()
                headers = {"content-type": rng.choice(["application/json", "text/plain", "", "application/xml"])}
                if roll < 0.6:
                    body = random_body(rng)
                    if rng.random() < 0.7:
                        body["model"] = rng.choice(["masked", "ar", "gaussian", "labelled", "nope"])
                    answer = client.post("/v1/generate", content=json.dumps(body), headers=headers)
                elif roll < 0.85:
                    answer = client.post("/v1/generate", content=malformed(rng), headers=headers)
                else:
                    method = rng.choice(["GET", "PUT", "DELETE", "PATCH", "POST"])
                    path = rng.choice(["/", "/health", "/v1/models", "/v1/model?name=" + rng.choice(["ar", "x", ""]),
                                       "/v1/model?name=%00", "/static/../../etc/passwd", "/static/app.js",
                                       "/v1/generate?stream=1", "/%ff", "/docs", "/openapi.json"])
                    answer = client.request(method, path)
                answer.read()
                statuses[answer.status_code] += 1
                assert answer.status_code < 500, f"request {i}: {answer.status_code} {answer.text[:300]}"
            assert process.poll() is None  # never restarted, never died
            health = client.get("/health").json()
    assert health["status"] == "ok" and health["served"] > 0
    assert sum(statuses.values()) == REQUESTS
    assert statuses[200] >= 50 and sum(n for s, n in statuses.items() if 400 <= s < 500) >= 300, statuses
