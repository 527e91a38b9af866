"""The worker's plain endpoints (everything but generation), and what every handler uses to
read a request and answer it.

A handler is ``async (state, request) -> response``; :mod:`.routes` binds it to the worker's
state and lists it once, with its path, method and whether it needs the API key.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from llcuda_tui.core.config import Paths
from llcuda_tui.core.errors import LlcudaError
from llcuda_tui.core.worker import protocol as P
from llcuda_tui.core.worker.state import ServedEngine, WorkerState

Handler = Callable[[WorkerState, Request], Awaitable[Response]]
"""An endpoint: the worker's state and the request in, the response out."""

BODY_DRAIN_LIMIT = 64 * 2**20
"""An oversized body is read (and dropped) up to this size so the client gets a clean 413."""

T = TypeVar("T")


async def health(state: WorkerState, _request: Request) -> Response:
    """200 once the model is loaded; 503 while loading, after a failed load, when draining."""
    if state.draining:
        return json_reply({"status": "shutting down"}, 503)
    if state.status == "ready":
        return json_reply({"status": "ok"})
    body = {"status": state.status}
    if state.error is not None:
        body["error"] = str(state.error)
    return json_reply(body, 503)


async def models(state: WorkerState, _request: Request) -> Response:
    """The OpenAI model list: the one model this worker serves."""
    return json_reply({"object": "list", "data": [_model_object(state)]})


async def model(state: WorkerState, request: Request) -> Response:
    """One model by id (OpenAI's ``GET /v1/models/{id}``); 404 ``model_not_found`` for any id
    but the one served."""
    model_id, served = request.path_params["model_id"], state.config.model_name
    if model_id != served:
        message = f"the model '{model_id}' does not exist (this worker serves '{served}')"
        raise P.RequestError(message, 404, param="model", code="model_not_found")
    return json_reply(_model_object(state))


def _model_object(state: WorkerState) -> dict[str, Any]:
    return {
        "id": state.config.model_name,
        "object": "model",
        "created": state.created,
        "owned_by": "llcuda",
    }


async def metrics(state: WorkerState, _request: Request) -> Response:
    """Prometheus exposition text."""
    from prometheus_client import CONTENT_TYPE_LATEST

    body = state.metrics.render(state.stats())
    return Response(body, media_type=CONTENT_TYPE_LATEST.split(";")[0])


async def info(state: WorkerState, _request: Request) -> Response:
    """Status, model, limits, LoadInfo and the slot loop's stats."""
    return json_reply(state.info())


async def gpu(state: WorkerState, request: Request) -> Response:
    """``{"snapshot": GpuSample, "history": {index: [GpuReading, ...]}}`` (``?history=N``
    readings per GPU, newest last; default 60)."""
    n = int_param(request, "history", 60, 0, 10_000)
    sampler = await in_thread(state.gpu_sampler)
    snap = sampler.latest
    if snap is None:
        snap = await in_thread(sampler.sample)
    history = {}
    if n:
        history = {
            str(g.index): [r.to_dict() for r in sampler.history(g.index)[-n:]] for g in snap.gpus
        }
    return json_reply(
        {"snapshot": snap.to_dict(), "history": history, "interval_s": sampler.interval_s}
    )


async def store_models(state: WorkerState, _request: Request) -> Response:
    """The loaded model and, when the worker has a store, its listing."""
    cfg = state.config
    engine = state.engine
    loaded = {
        "id": cfg.model_name,
        "path": str(cfg.engine.model_path),
        "parallel": cfg.parallel,
        "status": state.status,
        "load": asdict(engine.info) if engine is not None else None,
    }
    body: dict[str, Any] = {"loaded": loaded, "store": []}
    paths = cfg.paths
    if paths is not None:
        try:
            body["store"] = await in_thread(lambda: _store_listing(paths))
        except LlcudaError as exc:
            body["store_error"] = str(exc)
    return json_reply(body)


async def runs(state: WorkerState, request: Request) -> Response:
    """Recent run records, newest first (``?limit=N``, default 50)."""
    n = int_param(request, "limit", 50, 1, 10_000)
    return json_reply({"runs": list(reversed(state.runs))[:n]})


async def tokenize(state: WorkerState, request: Request) -> Response:
    """``content`` as token ids, or a chat's prompt (with its ``tools``) as the worker's
    template renders it."""
    state.check_ready()
    body = P.parse_body(await read_body(request, state.config.max_body_bytes))
    use = await state.use_model(body)
    try:
        return await _tokenize(state, body, use.engine)
    finally:
        use.release()


async def _tokenize(state: WorkerState, body: dict[str, Any], engine: ServedEngine) -> Response:
    if "messages" in body:  # a chat: its prompt as the worker's template renders it
        # with the tools, as a chat request renders them
        fields: dict[str, Any] = {
            k: body[k] for k in ("messages", "tools", "tool_choice") if k in body
        }
        chat = P.parse_chat(fields, state.config.sampling, state.limits())
        prompt = await in_thread(lambda: engine.prompt_tokens(chat.request))
        return json_reply({"tokens": prompt})
    content = body.get("content")
    if not isinstance(content, str):
        raise P.RequestError("'content' (or 'messages') must be given", param="content")
    add_special = body.get("add_special", True) is not False
    tokens = await in_thread(lambda: engine.tokenize(content, add_special, True))
    return json_reply({"tokens": tokens})


def _store_listing(paths: Paths) -> list[dict[str, Any]]:
    from llcuda_tui.core.store import list_models

    return [entry.to_json() for entry in list_models(paths)]


# --- reading requests, answering them ---------------------------------------------------------


def json_reply(body: Any, status: int = 200) -> JSONResponse:
    """``body`` as a JSON response."""
    return JSONResponse(body, status_code=status)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body; a 413 past ``limit`` bytes (drained first, up to a hard cap), a 499
    when the client is gone before its end."""
    declared = request.headers.get("content-length")
    too_big = P.RequestError(f"the request body is larger than {limit} bytes", 413)
    if declared is not None and declared.isdigit() and int(declared) > BODY_DRAIN_LIMIT:
        raise too_big
    parts, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > BODY_DRAIN_LIMIT:
                raise too_big
            if size <= limit:
                parts.append(chunk)
    except ClientDisconnect:
        # the client left, or the worker dropped it (its body was too slow: connections.py):
        # nobody reads this reply, but as a RequestError it is no logged traceback
        raise P.RequestError("the client closed the connection during the body", 499) from None
    if size > limit:
        raise too_big
    return b"".join(parts)


def int_param(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    """The query parameter ``name`` as an integer clamped to ``[lo, hi]``; 400 if not one."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise P.RequestError(f"'{name}' must be an integer", param=name) from None
    return max(lo, min(hi, value))


async def in_thread(fn: Callable[[], T]) -> T:
    """``fn()`` on a worker thread (engine and NVML calls block)."""
    return await run_in_threadpool(fn)
