"""Load on `dlms serve`: requests/s and p50 / p95 latency at several concurrencies, with request
batching and without it (each request sampled alone), against live servers on the loopback.

    PYTHONPATH=src python bench/serve_load.py --checkpoint runs/demo-masked --checkpoint runs/demo-ar

For each checkpoint two servers run side by side (batching on, and `--no_batching`), but only
one is under load at a time: the rounds interleave them (the order rotating each round) and the
figures are medians over rounds. Clients are closed-loop: each of `c` clients sends its next
request when its answer arrives; every request asks for one sample with its own seed (other
fields from --body). Prints one JSON line per (checkpoint, mode, concurrency), then a summary line
per checkpoint with the batching speedup at the highest concurrency and the latency target
p95 < 2 x single-request latency x (concurrency / requests per batch). A last line per checkpoint
gives the ceiling without any server: the same requests sampled in this process, one by one and
as one batch (`DiffusionLM.run_drafts`), interleaved, median over rounds.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(checkpoint: str, batching: bool, threads: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [sys.executable, "-m", "dlms.cli", "serve", "--checkpoint", checkpoint, "--port", str(port),
               "--max_queue", "256", "--device", "cpu"]
    if not batching:
        command.append("--no_batching")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT / "src")}
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    while time.time() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"dlms serve {checkpoint} exited: {process.stderr.read()}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.3)
    raise SystemExit(f"dlms serve {checkpoint} did not start")


async def load(url: str, concurrency: int, requests: int, body: dict, seed0: int) -> dict:
    """`requests` requests from `concurrency` closed-loop clients: requests/s, latencies, batch sizes."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    counter = iter(range(requests))

    async def client(http: httpx.AsyncClient) -> None:
        for i in counter:
            began = time.perf_counter()
            answer = await http.post("/v1/generate", json={**body, "seed": seed0 + i})
            latencies.append(time.perf_counter() - began)
            statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as http:
        before = (await http.get("/health")).json()
        began = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
        seconds = time.perf_counter() - began
        after = (await http.get("/health")).json()
    sampler_calls = after["batches"] - before["batches"]  # batches the worker ran for these requests
    ordered = sorted(latencies)
    return {"rps": requests / seconds, "p50": ordered[len(ordered) // 2],
            "p95": ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))],
            "batch": (after["served"] - before["served"]) / max(sampler_calls, 1),
            "errors": sum(n for s, n in statuses.items() if s != 200),
            "server_errors": sum(n for s, n in statuses.items() if s >= 500)}


def in_process_ceiling(checkpoint: str, concurrency: int, rounds: int, threads: int) -> dict:
    """`concurrency` one-sample requests sampled one by one, then as one batch, with no server."""
    import torch

    sys.path.insert(0, str(ROOT / "src"))
    from dlms.model import DiffusionLM

    torch.set_num_threads(threads)
    lm = DiffusionLM.load_checkpoint(checkpoint, device="cpu")
    lm.run_drafts([lm.prepare_sample(seed=0)])  # warm up
    alone, together = [], []
    for r in range(rounds):
        seeds = [1000 * r + i for i in range(concurrency)]
        order = [0, 1] if r % 2 == 0 else [1, 0]
        for which in order:
            drafts = [lm.prepare_sample(seed=s) for s in seeds]
            began = time.perf_counter()
            if which == 0:
                for draft in drafts:
                    lm.run_drafts([draft])
                alone.append(time.perf_counter() - began)
            else:
                lm.run_drafts(drafts)
                together.append(time.perf_counter() - began)
    return {"bench": "serve_load", "checkpoint": checkpoint, "in_process": True, "concurrency": concurrency,
            "requests_per_s_alone": round(concurrency / statistics.median(alone), 2),
            "requests_per_s_batched": round(concurrency / statistics.median(together), 2),
            "batching_speedup": round(statistics.median(alone) / statistics.median(together), 2), "rounds": rounds,
            "threads": threads}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", action="append", required=True, help="a run to serve (repeatable)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=8, help="requests per client per (mode, concurrency) per round (at least 32 in all)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="OMP threads of each server")
    parser.add_argument("--body", default="{}", help="JSON fields every request carries (e.g. '{\"steps\": 24}')")
    args = parser.parse_args()
    body = json.loads(args.body)
    for checkpoint in args.checkpoint:
        servers = {mode: start_server(checkpoint, mode == "batched", args.threads) for mode in ("batched", "alone")}
        try:
            for _, url in servers.values():  # warm up: first calls allocate
                asyncio.run(load(url, 4, 8, body, 10**6))
            cells: dict[tuple[str, int], list[dict]] = {}
            for r in range(args.rounds):
                modes = ["batched", "alone"] if r % 2 == 0 else ["alone", "batched"]
                for c in args.concurrency:
                    for mode in modes:
                        cells.setdefault((mode, c), []).append(
                            asyncio.run(load(servers[mode][1], c, max(32, args.requests * c), body, 1000 * r)))
            summary = {}
            for (mode, c), runs in sorted(cells.items(), key=lambda kv: (kv[0][1], kv[0][0])):
                row = {"bench": "serve_load", "checkpoint": checkpoint, "mode": mode, "concurrency": c,
                       "requests": sum(max(32, args.requests * c) for _ in runs), "rounds": len(runs),
                       "requests_per_s": round(statistics.median(x["rps"] for x in runs), 2),
                       "p50_s": round(statistics.median(x["p50"] for x in runs), 4),
                       "p95_s": round(statistics.median(x["p95"] for x in runs), 4),
                       "requests_per_batch": round(statistics.median(x["batch"] for x in runs), 2),
                       "errors": sum(x["errors"] for x in runs), "server_errors": sum(x["server_errors"] for x in runs),
                       "threads": args.threads}
                summary[(mode, c)] = row
                print(json.dumps(row), flush=True)
            top, low = max(args.concurrency), min(args.concurrency)
            single = summary[("alone", low)]["p50_s"]
            batched = summary[("batched", top)]
            bound = 2 * single * top / max(batched["requests_per_batch"], 1.0)
            print(json.dumps({
                "bench": "serve_load", "checkpoint": checkpoint, "summary": True, "concurrency": top,
                "batching_speedup": round(batched["requests_per_s"] / summary[("alone", top)]["requests_per_s"], 2),
                "target_speedup": 4.0, "single_request_latency_s": single, "p95_s": batched["p95_s"],
                "p95_bound_s": round(bound, 4), "p95_within_bound": batched["p95_s"] < bound,
                "p95_unbatched_s": summary[("alone", top)]["p95_s"],
                "server_errors": sum(row["server_errors"] for row in summary.values())}), flush=True)
        finally:
            for process, _ in servers.values():
                process.terminate()
                process.wait(timeout=30)
        print(json.dumps(in_process_ceiling(checkpoint, max(args.concurrency), args.rounds, args.threads)), flush=True)


if __name__ == "__main__":
    main()
