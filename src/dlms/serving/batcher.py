"""Request batching: a bounded queue and one worker thread that samples.

Requests wait in a queue of at most `max_queue` (beyond it `submit` raises QueueFull: the
server answers 429 with Retry-After, it never holds a request it cannot serve soon). The worker
takes the oldest request and, with batching on, every waiting request with the same batch key
(the same model, sampler, options and canvas layout: drafts.py), up to `max_batch_rows` sample
rows, and samples them in one call. Each request still gets exactly the texts it would get alone
(its own generator: samplers/randomness.py). Results and step frames go back to the request's
event loop thread-safely.
"""
from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any


class ServerStopping(Exception):
    """The server is shutting down: no new work, and waiting requests are let go."""

    def __init__(self):
        super().__init__("the server is stopping; retry in a moment (or on another instance)")


class QueueFull(Exception):
    """The queue holds `max_queue` requests already; `retry_after` seconds is a fair wait."""

    def __init__(self, retry_after: int):
        super().__init__(f"the server is busy: its queue is full; retry in {retry_after} s")
        self.retry_after = retry_after


@dataclass
class Job:
    """One accepted request: its engine and prepared work, and where its answer goes."""

    engine: Any
    work: Any
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    frames: asyncio.Queue | None = None  # a streaming request's frames
    submitted: float = field(default_factory=time.perf_counter)
    started: float | None = None
    cancelled: bool = False  # the client went away, or gave up waiting: skip it

    @property
    def key(self) -> tuple:
        return self.engine.batch_key(self.work)

    def watch(self, item: dict) -> None:
        if self.frames is not None and not self.cancelled:
            self.loop.call_soon_threadsafe(self.frames.put_nowait, item)

    def finish(self, result: Any = None, error: BaseException | None = None) -> None:
        def settle() -> None:
            if self.future.done():
                return
            if error is not None:
                self.future.set_exception(error)
            else:
                self.future.set_result(result)

        self.loop.call_soon_threadsafe(settle)


class Batcher:
    """The queue and its worker thread (`start`, `stop`)."""

    def __init__(self, max_queue: int, max_batch_rows: int, batching: bool = True, window_s: float = 0.002):
        """`window_s`: the quiet time that ends a burst of arrivals (`_gather`)."""
        self.max_queue, self.max_batch_rows = max_queue, max_batch_rows
        self.batching, self.window_s = batching, window_s
        self.queue: deque[Job] = deque()
        self.cond = threading.Condition()
        self.thread: threading.Thread | None = None
        self.running = False
        self.busy = False
        self.batch_seconds = 0.0  # a running mean, for Retry-After
        self.batches = 0
        self.served = 0
        self.expected = 1  # requests in the system when the last batch ended (`_gather`)

    # ------------------------------------------------------------------ the request side
    def submit(self, job: Job) -> None:
        with self.cond:
            if not self.running:
                raise ServerStopping()
            if len(self.queue) >= self.max_queue:
                raise QueueFull(self.retry_after())
            self.queue.append(job)
            self.cond.notify()

    def retry_after(self) -> int:
        """Seconds until the queue has room, judged from recent batches (at least 1)."""
        per_batch = self.batch_seconds or 1.0
        batches = len(self.queue) / (self.max_batch_rows if self.batching else 1)
        return max(1, math.ceil(per_batch * max(batches, 1.0)))

    def pending(self) -> int:
        return len(self.queue)

    # ------------------------------------------------------------------ the worker
    def start(self) -> None:
        self.running = True
        self.thread = threading.Thread(target=self._loop, name="dlms-sampler", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        with self.cond:
            self.running = False
            self.cond.notify_all()
            waiting = list(self.queue)
            self.queue.clear()
        for job in waiting:
            job.finish(error=ServerStopping())
        if self.thread is not None:
            self.thread.join(timeout=30)

    def _gather(self) -> None:
        """Wait, at most 50 windows, until as many requests wait as were in the system when the
        last batch ended (`expected`: about the number of clients), or, with fewer than half of
        them in, none arrived for 10 windows. Clients whose answers just went out send their next
        requests one by one (each is parsed and checked first): a batch started at the first of
        them leaves the rest to a second batch, and the two then take turns. A lone client waits
        for nothing: one request was in the system."""
        deadline = time.perf_counter() + 50 * self.window_s
        with self.cond:  # woken by each `submit`: no polling that would contend for the GIL
            while len(self.queue) < self.expected and self.running:
                left = deadline - time.perf_counter()
                few = len(self.queue) * 2 < self.expected
                if left <= 0 or (few and self._quiet_since() > 10 * self.window_s):
                    return
                self.cond.wait(timeout=min(left, 10 * self.window_s))

    def _quiet_since(self) -> float:
        """Seconds since the newest waiting request arrived."""
        return time.perf_counter() - self.queue[-1].submitted if self.queue else float("inf")

    def _take(self) -> list[Job] | None:
        """The next batch: the oldest live request and the waiting ones that match it."""
        with self.cond:
            while self.running and not self.queue:
                self.cond.wait()
            if not self.running:
                return None
        if self.batching and self.window_s > 0:
            self._gather()
        with self.cond:
            while self.queue and self.queue[0].cancelled:
                self.queue.popleft()
            if not self.queue:
                return []
            first = self.queue.popleft()
            batch, rows = [first], first.engine.rows(first.work)
            if self.batching:
                key = first.key
                kept: deque[Job] = deque()
                for job in self.queue:
                    size = job.engine.rows(job.work)
                    if not job.cancelled and job.engine is first.engine and rows + size <= self.max_batch_rows \
                            and job.key == key:
                        batch.append(job)
                        rows += size
                    elif not job.cancelled:
                        kept.append(job)
                self.queue = kept
            return batch

    def _loop(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            if not batch:
                continue
            began = time.perf_counter()
            self.busy = True
            for job in batch:
                job.started = began
            engine = batch[0].engine
            try:
                outcomes = engine.run([j.work for j in batch], [j.watch if j.frames is not None else None
                                                                for j in batch])
                for job, outcome in zip(batch, outcomes):
                    job.finish(outcome)
            except BaseException as exc:  # reported to each request; the worker lives on
                for job in batch:
                    job.finish(error=exc)
            finally:
                self.busy = False
            seconds = time.perf_counter() - began
            # The requests in the system as this batch ends, its own and those that came meanwhile:
            # about the number of clients, which is what the next batch waits for (`_gather`).
            self.expected = len(batch) + len(self.queue)
            self.batches += 1
            self.served += len(batch)
            self.batch_seconds = seconds if self.batches == 1 else 0.8 * self.batch_seconds + 0.2 * seconds
