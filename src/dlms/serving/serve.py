"""`dlms serve`: check the options, load the runs, and run the app under uvicorn."""
from __future__ import annotations

import socket
from pathlib import Path

from ..checks import check_int, check_number
from ..errors import DlmsError
from .schema import ServeLimits


def named_runs(specs: list[str]) -> dict[str, str]:
    """`NAME=RUN` or `RUN` (named by its folder) -> {name: run}; names must differ."""
    runs: dict[str, str] = {}
    for spec in specs:
        name, _, path = spec.partition("=") if "=" in spec else (Path(spec.rstrip("/")).name, "", spec)
        if not name or not path:
            raise DlmsError(f"--checkpoint '{spec}' must be RUN or NAME=RUN")
        if name in runs:
            raise DlmsError(f"two runs are named '{name}'; name them apart with --checkpoint NAME=RUN")
        runs[name] = path
    return runs


def check_port_free(host: str, port: int) -> None:
    """One clear line, before minutes of loading, when the address cannot be listened on."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        raise DlmsError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); pick another --port, or stop what "
                        "holds it") from None


def serve(checkpoints: list[str], *, host: str = "127.0.0.1", port: int = 8000, device: str = "auto",
          precision: str | None = None, max_length: int = 512, max_steps: int = 512, max_samples: int = 16,
          max_queue: int = 64, max_batch: int = 64, batching: bool = True, batch_window_ms: float = 2.0,
          queue_timeout: float = 60.0) -> int:
    for name, value in (("max_length", max_length), ("max_steps", max_steps), ("max_samples", max_samples),
                        ("max_queue", max_queue), ("max_batch", max_batch)):
        check_int(name, value, 1)
    check_int("port", port, 0)
    if port > 65535:
        raise DlmsError(f"--port {port} is not a port; use 1..65535")
    check_number("batch_window_ms", batch_window_ms, 0.0, 1000.0)
    check_number("queue_timeout", queue_timeout, 0.0, low_open=True)
    runs = named_runs(checkpoints)
    check_port_free(host, port)

    import uvicorn

    from .app import create_app
    from .engines import load_engine

    engines = {name: load_engine(name, path, device, precision) for name, path in runs.items()}
    limits = ServeLimits(max_length=max_length, max_steps=max_steps, max_samples=max_samples, max_queue=max_queue,
                         max_batch_rows=max_batch, batching=batching, batch_window_s=batch_window_ms / 1000,
                         queue_timeout_s=queue_timeout)
    app = create_app(engines, limits)
    for name, engine in engines.items():
        info = engine.info()
        print(f"serving '{name}' ({info['method']}, {info['parameters']:,} parameters) from {engine.path}", flush=True)
    shown = f"[{host}]" if ":" in host else host
    print(f"open http://{shown}:{port}/ (API: /v1/generate, /v1/models, /health; docs: /docs); Ctrl-C stops",
          flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5)
    return 0
