"""The HTTP application: `create_app(engines, limits)` -> a FastAPI app.

    GET  /                 the live page (static/index.html)
    GET  /health           {"status": "ok", ...}
    GET  /v1/models        every served model's description
    GET  /v1/model         one model's (?name=...; default the first)
    POST /v1/generate      texts and timing; with "stream": true, Server-Sent Events: an
                           `event: step` per denoising step (frames.py), then `event: done`

Every error is a JSON object {"error": "one line"} with a 4xx status: 400 malformed JSON, 404
unknown model or path, 413 body too large, 422 a field of the wrong type, unknown or out of
range, 429 queue full and 503 stopping or waited too long (both with Retry-After).
"""
from __future__ import annotations

import asyncio
import json
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import DlmsError
from .batcher import Batcher, Job, QueueFull, ServerStopping
from .schema import GenerateBody, ServeLimits, first_problem

STATIC = Path(__file__).parent / "static"


def error(status: int, message: str, retry_after: int | None = None) -> JSONResponse:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return JSONResponse({"error": " ".join(message.split())}, status_code=status, headers=headers)


def create_app(engines: dict[str, Any], limits: ServeLimits | None = None) -> FastAPI:
    """An app serving `engines` (name -> ModelEngine / DglmEngine, engines.py), the first the default."""
    limits = limits or ServeLimits()
    if not engines:
        raise ValueError("serve at least one model")
    batcher = Batcher(limits.max_queue, limits.max_batch_rows, limits.batching, limits.batch_window_s)
    started = time.time()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        yield
        batcher.stop()

    app = FastAPI(title="dlms", description="Generate with diffusion language models, and watch them denoise.",
                  lifespan=lifespan)
    app.state.batcher, app.state.engines, app.state.limits = batcher, engines, limits
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        detail = exc.detail if isinstance(exc.detail, str) else "request refused"
        if exc.status_code == 404:
            detail = f"no such path: {request.url.path}; see GET /docs for the API"
        return error(exc.status_code, detail)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        problem = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in problem.get("loc", ()))
        return error(422, f"{where}: {problem.get('msg')}" if where else str(problem.get("msg")))

    def engine_named(name: str | None):
        if name is None:
            return next(iter(engines.values()))
        if name not in engines:
            return None
        return engines[name]

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html")

    @app.get("/health")
    async def health():
        return {"status": "ok" if batcher.running else "stopping", "models": list(engines),
                "queue": batcher.pending(), "queue_limit": limits.max_queue, "busy": batcher.busy,
                "served": batcher.served, "batches": batcher.batches, "uptime_s": round(time.time() - started, 1)}

    @app.get("/v1/models")
    async def models():
        return {"models": [e.info() | {"limits": limit_info(limits)} for e in engines.values()]}

    @app.get("/v1/model")
    async def model(name: str | None = None):
        engine = engine_named(name)
        if engine is None:
            return error(404, f"no model named '{name}'; this server has: {', '.join(engines)}")
        return engine.info() | {"limits": limit_info(limits)}

    body_schema = {"requestBody": {"required": True, "content": {
        "application/json": {"schema": GenerateBody.model_json_schema()}}}}

    @app.post("/v1/generate", openapi_extra=body_schema)
    async def generate(request: Request):
        raw = await request.body()
        if len(raw) > limits.max_body_bytes:
            return error(413, f"the body is {len(raw)} bytes, over this server's limit of {limits.max_body_bytes}")
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            return error(400, f"the body is not valid JSON ({exc}); send a JSON object such as "
                              "{\"prompt\": \"the cat\"}")
        except RecursionError:
            return error(400, "the body nests too deeply to read; send a flat JSON object of generation fields")
        try:
            body = GenerateBody.model_validate(data)
        except ValidationError as exc:
            return error(422, first_problem(exc))
        engine = engine_named(body.model)
        if engine is None:
            return error(404, f"no model named '{body.model}'; this server has: {', '.join(engines)}")
        fields = body.fields()
        try:
            limits.check(fields)
            work = engine.prepare(fields)
        except DlmsError as exc:
            return error(422, str(exc))
        loop = asyncio.get_running_loop()
        job = Job(engine, work, loop, loop.create_future(), asyncio.Queue() if body.stream else None)
        try:
            batcher.submit(job)
        except QueueFull as exc:
            return error(429, str(exc), exc.retry_after)
        except ServerStopping as exc:
            return error(503, str(exc), 5)
        if body.stream:
            return StreamingResponse(stream(job, engine, work), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        try:
            outcome = await wait(job)
        except asyncio.TimeoutError:
            return error(503, f"the request waited over {limits.queue_timeout_s:g} s in the queue; retry later",
                         batcher.retry_after())
        except ServerStopping as exc:
            return error(503, str(exc), 5)
        except DlmsError as exc:
            return error(422, str(exc))
        return answer(job, engine, outcome)

    async def wait(job: Job):
        """The job's outcome; a TimeoutError when it has not started within the queue timeout."""
        deadline = job.submitted + limits.queue_timeout_s
        while True:
            try:
                return await asyncio.wait_for(asyncio.shield(job.future), timeout=0.5)
            except asyncio.TimeoutError:
                if job.started is None and time.perf_counter() > deadline:
                    job.cancelled = True
                    raise
            except asyncio.CancelledError:
                job.cancelled = True
                raise

    def answer(job: Job, engine, outcome) -> dict:
        waited = (job.started or job.submitted) - job.submitted
        return {"model": engine.name, **outcome.json(), "queue_seconds": round(waited, 4)}

    async def stream(job: Job, engine, work):
        def event(name: str, data: dict) -> str:
            return f"event: {name}\ndata: {json.dumps(data)}\n\n"

        try:
            yield event("step", engine.first_frame(work))
            result = asyncio.ensure_future(wait(job))
            while True:
                getter = asyncio.ensure_future(job.frames.get())
                done, _ = await asyncio.wait({getter, result}, return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    yield event("step", getter.result())
                    continue
                getter.cancel()
                while not job.frames.empty():  # frames made before the result arrived
                    yield event("step", job.frames.get_nowait())
                try:
                    yield event("done", answer(job, engine, result.result()))
                except asyncio.TimeoutError:
                    yield event("error", {"error": "the request waited too long in the queue; retry later",
                                          "status": 503})
                except ServerStopping as exc:
                    yield event("error", {"error": str(exc), "status": 503})
                except DlmsError as exc:
                    yield event("error", {"error": " ".join(str(exc).split()), "status": 422})
                except Exception as exc:  # a fault of the server's own: said, not left as a cut stream
                    yield event("error", {"error": f"internal error: {type(exc).__name__}: {exc}", "status": 500})
                return
        finally:
            job.cancelled = True  # a client that left stops receiving frames, and an unstarted job is skipped

    return app


def limit_info(limits: ServeLimits) -> dict:
    return {"max_length": limits.max_length, "max_steps": limits.max_steps, "max_samples": limits.max_samples,
            "max_queue": limits.max_queue, "batching": limits.batching, "max_batch_rows": limits.max_batch_rows}
