"""The queue and its worker on a stand-in engine: what is batched with what, the row limit, the
queue limit, cancelled requests, a failing batch, and shutting down."""
from __future__ import annotations

import asyncio
import threading

import pytest

from dlms.serving.batcher import Batcher, Job, QueueFull, ServerStopping


class Engine:
    """Work is {"key": ..., "rows": n}; `run` records each batch and waits for `gate`."""

    def __init__(self):
        self.batches: list[list[dict]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.fail = False

    def batch_key(self, work):
        return work["key"]

    def rows(self, work):
        return work["rows"]

    def run(self, works, watchers):
        self.gate.wait(10)
        self.batches.append(works)
        if self.fail:
            raise RuntimeError("broken")
        return [f"done {w['key']}" for w in works]


async def submit_all(batcher: Batcher, engine: Engine, works: list[dict]) -> list:
    loop = asyncio.get_running_loop()
    jobs = [Job(engine, w, loop, loop.create_future()) for w in works]
    for job in jobs:
        batcher.submit(job)
    return await asyncio.gather(*(j.future for j in jobs), return_exceptions=True)


def test_compatible_requests_share_a_batch_up_to_the_row_limit():
    engine, batcher = Engine(), Batcher(max_queue=16, max_batch_rows=4, window_s=0.001)
    engine.gate.clear()  # hold the first batch so that the rest queue up behind it
    batcher.start()
    works = [{"key": "a", "rows": 1}] + [{"key": k, "rows": r} for k, r in
                                         (("a", 2), ("b", 1), ("a", 2), ("a", 1), ("b", 3))]

    async def go():
        first = asyncio.ensure_future(submit_all(batcher, engine, works[:1]))
        await asyncio.sleep(0.2)  # the worker holds it; the rest queue up behind it
        rest = asyncio.ensure_future(submit_all(batcher, engine, works[1:]))
        await asyncio.sleep(0.05)
        engine.gate.set()
        return await first + await rest

    results = asyncio.run(go())
    batcher.stop()
    assert results == ["done a", "done a", "done b", "done a", "done a", "done b"]
    sizes = [[(w["key"], w["rows"]) for w in batch] for batch in engine.batches]
    assert sizes[0] == [("a", 1)]
    assert sizes[1] == [("a", 2), ("a", 2)]  # same key, 4 rows: the limit; the next "a" waits
    assert sizes[2] == [("b", 1), ("b", 3)] and sizes[3] == [("a", 1)]


def test_without_batching_every_request_runs_alone():
    engine, batcher = Engine(), Batcher(max_queue=16, max_batch_rows=64, batching=False)
    batcher.start()
    asyncio.run(submit_all(batcher, engine, [{"key": "a", "rows": 1}] * 5))
    batcher.stop()
    assert [len(b) for b in engine.batches] == [1] * 5


def test_a_full_queue_refuses_with_a_retry_time_and_stop_lets_waiting_requests_go():
    engine, batcher = Engine(), Batcher(max_queue=2, max_batch_rows=8)
    engine.gate.clear()
    batcher.start()

    async def go():
        loop = asyncio.get_running_loop()
        jobs = [Job(engine, {"key": "a", "rows": 1}, loop, loop.create_future()) for _ in range(4)]
        batcher.submit(jobs[0])
        await asyncio.sleep(0.1)  # the worker holds it
        batcher.submit(jobs[1])
        batcher.submit(jobs[2])
        with pytest.raises(QueueFull) as full:
            batcher.submit(jobs[3])
        assert full.value.retry_after >= 1 and "queue is full" in str(full.value)
        threading.Timer(0.2, engine.gate.set).start()
        await asyncio.get_running_loop().run_in_executor(None, batcher.stop)
        return await asyncio.gather(*(j.future for j in jobs[:3]), return_exceptions=True)

    first, second, third = asyncio.run(go())
    assert first == "done a"
    assert isinstance(second, ServerStopping) and isinstance(third, ServerStopping)
    with pytest.raises(ServerStopping):
        batcher.submit(Job(engine, {"key": "a", "rows": 1}, asyncio.new_event_loop(), None))


def test_cancelled_requests_are_skipped_and_a_failing_batch_reports_to_each_request():
    engine, batcher = Engine(), Batcher(max_queue=8, max_batch_rows=8)
    engine.gate.clear()
    batcher.start()

    async def go():
        loop = asyncio.get_running_loop()
        jobs = [Job(engine, {"key": k, "rows": 1}, loop, loop.create_future()) for k in ("x", "y", "z", "z")]
        batcher.submit(jobs[0])
        await asyncio.sleep(0.1)
        for job in jobs[1:]:
            batcher.submit(job)
        jobs[1].cancelled = True  # its client went away before it started
        engine.fail = True
        engine.gate.set()
        return await asyncio.gather(*(j.future for j in (jobs[0], jobs[2], jobs[3])), return_exceptions=True)

    results = asyncio.run(go())
    batcher.stop()
    assert all(isinstance(r, RuntimeError) and str(r) == "broken" for r in results)
    assert [[w["key"] for w in b] for b in engine.batches] == [["x"], ["z", "z"]]  # "y" never ran
    assert batcher.thread is not None and not batcher.thread.is_alive()  # stopped cleanly after the failure
