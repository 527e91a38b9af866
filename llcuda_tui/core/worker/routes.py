"""The worker's HTTP API, listed once: :data:`ENDPOINTS` builds the Starlette app and tells the
:class:`Guard` which paths there are (metric labels) and which need no API key (/health).

OpenAI's endpoints, ``/health``, ``/metrics`` (Prometheus) and our extensions under
``/llcuda/v1/``; every error is an OpenAI-style JSON body (404 and 405 too).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from llcuda_tui.core.errors import LlcudaError, UserInputError
from llcuda_tui.core.worker import completions, embeddings, endpoints, router_endpoints
from llcuda_tui.core.worker import protocol as P
from llcuda_tui.core.worker.endpoints import Handler, json_reply
from llcuda_tui.core.worker.guard import Guard
from llcuda_tui.core.worker.state import WorkerState


@dataclass(frozen=True)
class Endpoint:
    """One route of the worker's API."""

    method: Literal["GET", "POST"]
    path: str
    handler: Handler
    needs_key: bool = True
    """False: answered without the API key (only /health, so load balancers can probe)."""


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("GET", "/health", endpoints.health, needs_key=False),
    Endpoint("GET", "/v1/models", endpoints.models),
    Endpoint("GET", "/v1/models/{model_id:path}", endpoints.model),
    Endpoint("POST", P.CHAT_PATH, completions.chat),
    Endpoint("POST", P.COMPLETIONS_PATH, completions.completions),
    Endpoint("POST", embeddings.EMBEDDINGS_PATH, embeddings.embeddings),
    Endpoint("GET", "/metrics", endpoints.metrics),
    Endpoint("GET", f"{P.EXT_PREFIX}/info", endpoints.info),
    Endpoint("GET", f"{P.EXT_PREFIX}/gpu", endpoints.gpu),
    Endpoint("GET", f"{P.EXT_PREFIX}/models", endpoints.store_models),
    Endpoint("GET", f"{P.EXT_PREFIX}/runs", endpoints.runs),
    Endpoint("POST", f"{P.EXT_PREFIX}/tokenize", endpoints.tokenize),
    Endpoint("POST", f"{P.EXT_PREFIX}/models/{{model_id:path}}/load", router_endpoints.load),
    Endpoint("POST", f"{P.EXT_PREFIX}/models/{{model_id:path}}/unload", router_endpoints.unload),
)


def create_app(state: WorkerState) -> ASGIApp:
    """The ASGI application serving ``state``: :data:`ENDPOINTS` behind the :class:`Guard`."""

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        state.waker.loop = asyncio.get_running_loop()
        state.start_loading()
        try:
            yield
        finally:
            await asyncio.get_running_loop().run_in_executor(None, state.close)

    # a worker of many models answers the model endpoints with its own handlers
    swap = router_endpoints.OVERRIDES if state.models is not None else {}
    app = Starlette(
        routes=[
            Route(e.path, _bound(swap.get(e.handler, e.handler), state), methods=[e.method])
            for e in ENDPOINTS
        ],
        lifespan=lifespan,
        exception_handlers={
            HTTPException: _http_error,
            LlcudaError: _llcuda_error,
            Exception: _internal_error,
        },
    )
    known = [e.path for e in ENDPOINTS]
    guarded = Guard(app, state, known, open_paths=[e.path for e in ENDPOINTS if not e.needs_key])
    origins = state.config.cors_origins
    if not origins:
        return guarded
    # outside the Guard: a preflight carries no Authorization header, so it is answered here;
    # the Guard's own replies (401, 403) get the CORS headers too, so the page can read them
    return CORSMiddleware(
        guarded,
        allow_origins=list(origins),
        allow_methods=["GET", "POST"],
        allow_headers=["authorization", "content-type"],
        max_age=600,
    )


def _bound(handler: Handler, state: WorkerState) -> Callable[[Request], Awaitable[Response]]:
    """``handler`` as a Starlette endpoint serving ``state``."""

    async def endpoint(request: Request) -> Response:
        return await handler(state, request)

    return endpoint


async def _http_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, HTTPException):  # registered for HTTPException only
        return await _internal_error(request, exc)
    message = {404: "no such endpoint", 405: "method not allowed"}.get(exc.status_code, exc.detail)
    code = "unknown_url" if exc.status_code == 404 else None  # OpenAI's code for a bad path
    return json_reply(P.error_body(message, exc.status_code, code=code), exc.status_code)


async def _llcuda_error(_request: Request, exc: Exception) -> Response:
    if isinstance(exc, P.RequestError):
        body = P.error_body(str(exc), exc.status, exc.param, exc.code)
        return json_reply(body, exc.status)
    status = 400 if isinstance(exc, UserInputError) else 500
    return json_reply(P.error_body(str(exc), status), status)


async def _internal_error(_request: Request, exc: Exception) -> Response:
    return json_reply(P.error_body(f"internal error: {type(exc).__name__}: {exc}", 500), 500)
