"""A `dlms serve` process on a free loopback port, for the tests that need a live server."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager

import httpx


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def live_server(checkpoints: list[str], *flags: str, timeout: float = 120.0):
    """Yields (base URL, process) of `dlms serve --checkpoint ...` once /health answers."""
    port = free_port()
    command = [sys.executable, "-m", "dlms.cli", "serve", "--port", str(port), "--device", "cpu", *flags]
    for checkpoint in checkpoints:
        command += ["--checkpoint", checkpoint]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"dlms serve exited with {process.returncode}: {process.stdout.read()}")
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                raise RuntimeError("dlms serve did not answer /health in time")
            time.sleep(0.2)
        yield url, process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
