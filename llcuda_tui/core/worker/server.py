"""The worker: an OpenAI-compatible HTTP API over a :class:`BatchEngine` (Starlette + uvicorn).

Endpoints: ``POST /v1/chat/completions`` and ``/v1/completions`` (SSE streams or whole
replies, with usage), ``GET /v1/models``, ``GET /health`` (503 while the model loads; the only
endpoint without the API key), ``GET /metrics`` (Prometheus), and our extensions under
``/llcuda/v1/``: ``info``, ``gpu`` (NVML snapshot and history), ``models`` (the loaded model and
the worker's store), ``runs`` (recent run records), ``tokenize``.

The model loads on a background thread after the socket is bound, so ``/health`` answers at
once. Requests are handed to the batch engine's thread; tokens come back through a per-request
buffer that the event loop drains, so concurrent requests share each ``llama_decode``. A client
that disconnects cancels its sequence (and frees its slot) within one step. On SIGTERM the worker
stops taking requests, lets in-flight ones run for ``shutdown_grace_s`` and then cancels the rest,
each stream ending with a proper last event.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import itertools
import json
import math
import socket
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Generator
from dataclasses import asdict, dataclass, field
from typing import Any

from llcuda_tui import __version__
from llcuda_tui.core.config import Paths, SamplingDefaults
from llcuda_tui.core.engine import Chunk, EngineConfig, RunRecord
from llcuda_tui.core.errors import LlcudaError, UserInputError
from llcuda_tui.core.worker import protocol as P
from llcuda_tui.core.worker.batch import BatchEngine

BODY_DRAIN_LIMIT = 64 * 2**20
"""An oversized body is read (and dropped) up to this size so the client gets a clean 413."""


@dataclass(frozen=True)
class WorkerConfig:
    """How to run a worker."""

    engine: EngineConfig
    model_name: str
    parallel: int = 4
    api_key: str | None = field(default=None, repr=False)
    """When set, every endpoint but /health needs ``Authorization: Bearer <key>``. Needed to
    listen on anything but a loopback address. Never shown (not even in the repr)."""
    max_body_bytes: int = 8 * 2**20
    max_tokens: int | None = None
    """Largest max_tokens a request may ask for; None = the per-sequence context."""
    sampling: SamplingDefaults = field(default_factory=SamplingDefaults)
    """Defaults for what a request does not say (max_tokens, temperature, ...)."""
    shutdown_grace_s: float = 10.0
    """On SIGTERM, in-flight requests may finish for this long before they are cancelled."""
    heartbeat_s: float = P.HEARTBEAT_S
    run_history: int = 256
    paths: Paths | None = None
    """Where the worker's model store lives (for /llcuda/v1/models)."""


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the worker reachable from this machine only."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return _loopback_ip(host.strip("[]"))
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(_loopback_ip(str(i[4][0])) for i in infos)


def _loopback_ip(text: str) -> bool:
    """Whether the IP literal ``text`` is a loopback address (also as an IPv4-mapped IPv6)."""
    ip = ipaddress.ip_address(text.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def check_exposure(config: WorkerConfig, sock: socket.socket) -> None:
    """Refuse to serve without an API key on a socket bound to anything but loopback (the
    address actually bound, so a name that resolves elsewhere is caught too)."""
    host = str(sock.getsockname()[0])
    if config.api_key is None and not _loopback_ip(host):
        raise UserInputError(
            f"refusing to listen on {host} without an API key "
            "(anyone who can reach it could use the worker)"
        )


# --- state shared by the handlers ------------------------------------------------------------


class _Metrics:
    """Prometheus metrics in a registry of this worker's own."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "llcuda_requests", "HTTP requests by path and status", ["path", "status"], registry=r
        )
        self.prompt_tokens = Counter(
            "llcuda_prompt_tokens", "Prompt tokens of finished requests", registry=r
        )
        self.generated_tokens = Counter("llcuda_generated_tokens", "Generated tokens", registry=r)
        self.runs = Counter(
            "llcuda_runs", "Finished generations by stop reason", ["stop_reason"], registry=r
        )
        latency = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
        self.ttft = Histogram(
            "llcuda_time_to_first_token_seconds",
            "Request to first token",
            buckets=latency,
            registry=r,
        )
        itl = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 1)
        self.itl = Histogram(
            "llcuda_inter_token_latency_seconds", "Time between tokens", buckets=itl, registry=r
        )
        self.duration = Histogram(
            "llcuda_request_duration_seconds", "Whole generation", buckets=latency, registry=r
        )
        self.queue_depth = Gauge("llcuda_queue_depth", "Requests waiting for a slot", registry=r)
        self.active = Gauge("llcuda_active_sequences", "Sequences holding a slot", registry=r)
        self.slots = Gauge("llcuda_slots", "Sequences that can run at once", registry=r)
        self.kv_used = Gauge("llcuda_kv_cells_used", "KV cache cells in use", registry=r)
        self.kv_total = Gauge("llcuda_kv_cells_total", "KV cache cells", registry=r)
        self.kv_usage = Gauge("llcuda_kv_cache_usage_ratio", "KV cells in use / total", registry=r)
        self.decode_steps = Gauge("llcuda_decode_steps", "llama_decode calls so far", registry=r)
        self.ready = Gauge("llcuda_model_ready", "1 once the model is loaded", registry=r)

    def observe_run(self, record: RunRecord) -> None:
        self.prompt_tokens.inc(record.prompt_tokens)
        self.generated_tokens.inc(record.generated_tokens)
        self.runs.labels(record.stop_reason).inc()
        self.duration.observe(record.total_s)
        if record.generated_tokens:
            self.ttft.observe(record.ttft_s)
        times = record.token_times_s
        for a, b in itertools.pairwise(times):
            self.itl.observe(b - a)

    def render(self, engine: BatchEngine | None) -> bytes:
        from prometheus_client import generate_latest

        self.ready.set(1 if engine is not None else 0)
        if engine is not None:
            s = engine.stats()
            self.queue_depth.set(s.queued)
            self.active.set(s.active)
            self.slots.set(s.slots)
            self.kv_used.set(s.kv_cells_used)
            self.kv_total.set(s.kv_cells_total)
            self.kv_usage.set(s.kv_usage)
            self.decode_steps.set(s.steps)
        return bytes(generate_latest(self.registry))


class WorkerState:
    """The loaded engine (once loaded), run records, metrics, GPU telemetry, shutdown state."""

    def __init__(
        self,
        config: WorkerConfig,
        loader: Callable[[], BatchEngine] | None = None,
        on_load_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.config = config
        self._loader = loader or (lambda: BatchEngine.load(config.engine, config.parallel))
        self._on_load_error = on_load_error
        self.engine: BatchEngine | None = None
        self.status = "loading"
        """loading, ready, error, closed."""
        self.error: BaseException | None = None
        self.draining = False
        self.loaded = threading.Event()
        """Set when loading ended (either way)."""
        self.runs: deque[dict[str, Any]] = deque(maxlen=max(1, config.run_history))
        self.metrics = _Metrics()
        self.created = int(time.time())
        self._gpu: Any = None
        self._gpu_lock = threading.Lock()
        self._drain_timer: threading.Timer | None = None
        self.waker = _Waker()
        self._state_lock = threading.Lock()

    def start_loading(self) -> None:
        threading.Thread(target=self._load, name="llcuda-worker-load", daemon=True).start()

    def _load(self) -> None:
        try:
            engine = self._loader()
        except BaseException as exc:  # reported by /health and the CLI
            self.error, self.status = exc, "error"
            self.loaded.set()
            if self._on_load_error is not None:
                self._on_load_error(exc)
            return
        with self._state_lock:
            closed = self.status == "closed"  # shut down while loading
            if not closed:
                engine.on_step = self.waker.flush
                self.engine, self.status = engine, "ready"
        if closed:
            engine.close()
        self.loaded.set()

    def ready_engine(self) -> BatchEngine:
        """The engine, or a 503 while loading, after a failed load, or when shutting down."""
        if self.draining or self.status == "closed":
            raise P.RequestError("the worker is shutting down", 503)
        if self.engine is None:
            if self.status == "error":
                raise P.RequestError(f"the model failed to load: {self.error}", 503)
            raise P.RequestError("the model is still loading", 503)
        return self.engine

    def drain(self) -> None:
        """Stop taking requests; cancel what still runs after ``shutdown_grace_s``."""
        if self.draining:
            return
        self.draining = True
        engine = self.engine
        if engine is not None:
            self._drain_timer = threading.Timer(self.config.shutdown_grace_s, engine.cancel)
            self._drain_timer.daemon = True
            self._drain_timer.start()

    def close(self) -> None:
        """Free the engine (cancelling what runs) and stop GPU sampling. Idempotent."""
        with self._state_lock:
            self.status = "closed" if self.status != "error" else self.status
            engine, self.engine = self.engine, None
        if self._drain_timer is not None:
            self._drain_timer.cancel()
        if engine is not None:
            engine.close()
        gpu, self._gpu = self._gpu, None
        if gpu is not None:
            gpu.close()

    def add_run(self, endpoint: str, model: str, record: RunRecord) -> None:
        self.metrics.observe_run(record)
        self.runs.append(
            {
                "id": P.new_id("run"),
                "created": time.time(),
                "endpoint": endpoint,
                "model": model,
                "record": record.to_dict(),
            }
        )

    def gpu_sampler(self) -> Any:
        """NVML sampling starts with the first request for it (1 s interval, 5 min history)."""
        with self._gpu_lock:
            if self._gpu is None:
                from llcuda_tui.core.gpu import GpuSampler

                self._gpu = GpuSampler(interval_s=1.0, history=300, pcie=False)
                self._gpu.start()
            return self._gpu

    def info(self) -> dict[str, Any]:
        cfg = self.config
        engine = self.engine
        out: dict[str, Any] = {
            "server": "llcuda-tui",
            "version": __version__,
            "status": "draining" if self.draining else self.status,
            "model": cfg.model_name,
            "parallel": cfg.parallel,
            "limits": {
                "max_tokens": self.limits().max_tokens,
                "max_body_bytes": cfg.max_body_bytes,
            },
            "load": None,
            "stats": None,
        }
        if self.error is not None:
            out["error"] = str(self.error)
        if engine is not None:
            out["load"] = asdict(engine.info)
            stats = engine.stats()
            out["stats"] = {**asdict(stats), "kv_usage": stats.kv_usage}
        return out

    def limits(self) -> P.Limits:
        engine = self.engine
        n_ctx = engine.info.n_ctx if engine is not None else self.config.engine.n_ctx or 1 << 20
        cap = self.config.max_tokens or n_ctx
        return P.Limits(max_tokens=cap, default_max_tokens=self.config.sampling.max_tokens)


# --- the bridge from the engine thread to the event loop ---------------------------------------


class _Waker:
    """Wakes the event loop once per engine step for every request that got chunks in it
    (one cross-thread call per step, not one per token and stream)."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self._dirty: list[_Bridge] = []
        self._lock = threading.Lock()

    def mark(self, bridge: _Bridge) -> None:
        with self._lock:
            self._dirty.append(bridge)

    def flush(self) -> None:
        """Called on the engine thread after each step."""
        with self._lock:
            if not self._dirty:
                return
            dirty, self._dirty = self._dirty, []
        if self.loop is not None:
            self.loop.call_soon_threadsafe(_wake_all, dirty)


def _wake_all(bridges: list[_Bridge]) -> None:
    for bridge in bridges:
        bridge.event.set()


class _Bridge:
    """Chunks from the engine thread, drained by one request's coroutine."""

    def __init__(self, waker: _Waker) -> None:
        self._waker = waker
        self._items: deque[Chunk | BaseException] = deque()
        self.event = asyncio.Event()

    def put(self, item: Chunk | BaseException) -> None:
        """Called on the engine thread; the waker wakes the reader at the end of the step."""
        self._items.append(item)
        self._waker.mark(self)

    async def get(self, timeout: float) -> list[Chunk | BaseException]:
        """Everything buffered, waiting up to ``timeout`` for something; [] on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self._items:
            self.event.clear()
            if self._items:
                break
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self.event.wait()
        out = []
        while self._items:
            out.append(self._items.popleft())
        return out


# --- the ASGI application ----------------------------------------------------------------------


def create_app(state: WorkerState) -> Any:
    """The Starlette application serving ``state``."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.routing import Route

    h = _Handlers(state)
    routes = [
        Route("/health", h.health, methods=["GET"]),
        Route("/v1/models", h.models, methods=["GET"]),
        Route("/v1/chat/completions", h.chat, methods=["POST"]),
        Route("/v1/completions", h.completions, methods=["POST"]),
        Route("/metrics", h.metrics, methods=["GET"]),
        Route(f"{P.EXT_PREFIX}/info", h.info, methods=["GET"]),
        Route(f"{P.EXT_PREFIX}/gpu", h.gpu, methods=["GET"]),
        Route(f"{P.EXT_PREFIX}/models", h.store_models, methods=["GET"]),
        Route(f"{P.EXT_PREFIX}/runs", h.runs, methods=["GET"]),
        Route(f"{P.EXT_PREFIX}/tokenize", h.tokenize, methods=["POST"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        state.waker.loop = asyncio.get_running_loop()
        state.start_loading()
        try:
            yield
        finally:
            await asyncio.get_running_loop().run_in_executor(None, state.close)

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            HTTPException: _http_error,
            LlcudaError: _llcuda_error,
            Exception: _internal_error,
        },
    )
    return _Guard(app, state)


class _Guard:
    """ASGI middleware: the API key on every path but /health, and request counting. A worker
    without a key (so on loopback) also refuses requests whose Host header is not a loopback
    name or address: a web page whose name was re-pointed at 127.0.0.1 (DNS rebinding) would
    otherwise read the worker's answers in the user's browser."""

    OPEN_PATHS = frozenset({"/health"})

    def __init__(self, app: Any, state: WorkerState) -> None:
        self.app = app
        self.state = state
        key = state.config.api_key
        self._key = f"Bearer {key}".encode() if key else None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        label = path if path in _KNOWN_PATHS else "other"
        status = {"code": 0}

        async def counting_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            if self._key is None and not _loopback_host(scope):
                message = (
                    "a worker without an API key only answers requests addressed to a loopback "
                    "name or address (Host header)"
                )
                await _send_json(send, 403, P.error_body(message, 403))
                status["code"] = 403
                return
            needs_key = self._key is not None and path not in self.OPEN_PATHS
            if needs_key and not self._authorized(scope):
                await _send_json(
                    send,
                    401,
                    P.error_body("missing or wrong API key", 401),
                    [(b"www-authenticate", b"Bearer")],
                )
                status["code"] = 401
                return
            await self.app(scope, receive, counting_send)
        finally:
            self.state.metrics.requests.labels(label, str(status["code"] or 499)).inc()

    def _authorized(self, scope: dict[str, Any]) -> bool:
        assert self._key is not None
        given = b""
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                given = value
                break
        return hmac.compare_digest(given, self._key)


def _loopback_host(scope: dict[str, Any]) -> bool:
    """Whether the request's Host header (if any) names this machine's loopback: localhost,
    ``*.localhost`` or a loopback IP literal, with or without a port (no DNS lookup)."""
    host = None
    for name, value in scope.get("headers", ()):
        if name == b"host":
            host = value.decode("latin-1").strip().lower()
            break
    if not host:
        return True  # HTTP/1.0 without Host: not a browser
    if host.startswith("["):
        host = host[1 : host.find("]")] if "]" in host else host
    elif host.count(":") == 1:
        host = host.split(":")[0]
    host = host.rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return _loopback_ip(host)
    except ValueError:
        return False


_KNOWN_PATHS = frozenset(
    {
        "/health",
        "/v1/models",
        "/v1/chat/completions",
        "/v1/completions",
        "/metrics",
        *(f"{P.EXT_PREFIX}/{p}" for p in ("info", "gpu", "models", "runs", "tokenize")),
    }
)


async def _send_json(
    send: Any, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


def _json(body: Any, status: int = 200) -> Any:
    from starlette.responses import JSONResponse

    return JSONResponse(body, status_code=status)


async def _http_error(_request: Any, exc: Any) -> Any:
    message = {404: "no such endpoint", 405: "method not allowed"}.get(exc.status_code, exc.detail)
    return _json(P.error_body(message, exc.status_code), exc.status_code)


async def _llcuda_error(_request: Any, exc: Exception) -> Any:
    if isinstance(exc, P.RequestError):
        return _json(P.error_body(str(exc), exc.status, exc.param), exc.status)
    status = 400 if isinstance(exc, UserInputError) else 500
    return _json(P.error_body(str(exc), status), status)


async def _internal_error(_request: Any, exc: Exception) -> Any:
    return _json(P.error_body(f"internal error: {type(exc).__name__}: {exc}", 500), 500)


class _Handlers:
    def __init__(self, state: WorkerState) -> None:
        self.state = state

    # --- plain endpoints ------------------------------------------------------------------

    async def health(self, _request: Any) -> Any:
        s = self.state
        if s.draining:
            return _json({"status": "shutting down"}, 503)
        if s.status == "ready":
            return _json({"status": "ok"})
        body = {"status": s.status}
        if s.error is not None:
            body["error"] = str(s.error)
        return _json(body, 503)

    async def models(self, _request: Any) -> Any:
        s = self.state
        model = {
            "id": s.config.model_name,
            "object": "model",
            "created": s.created,
            "owned_by": "llcuda",
        }
        return _json({"object": "list", "data": [model]})

    async def metrics(self, _request: Any) -> Any:
        from prometheus_client import CONTENT_TYPE_LATEST
        from starlette.responses import Response

        body = self.state.metrics.render(self.state.engine)
        return Response(body, media_type=CONTENT_TYPE_LATEST.split(";")[0])

    async def info(self, _request: Any) -> Any:
        return _json(self.state.info())

    async def gpu(self, request: Any) -> Any:
        """``{"snapshot": GpuSample, "history": {index: [GpuReading, ...]}}`` (``?history=N``
        readings per GPU, newest last; default 60)."""
        n = _int_param(request, "history", 60, 0, 10_000)
        sampler = await _in_thread(self.state.gpu_sampler)
        snap = sampler.latest or await _in_thread(sampler.sample)
        history = {}
        if n:
            history = {
                str(g.index): [r.to_dict() for r in sampler.history(g.index)[-n:]]
                for g in snap.gpus
            }
        return _json(
            {"snapshot": snap.to_dict(), "history": history, "interval_s": sampler.interval_s}
        )

    async def store_models(self, _request: Any) -> Any:
        """The loaded model and, when the worker has a store, its listing."""
        s = self.state
        engine = s.engine
        loaded = {
            "id": s.config.model_name,
            "path": str(s.config.engine.model_path),
            "parallel": s.config.parallel,
            "status": s.status,
            "load": asdict(engine.info) if engine is not None else None,
        }
        body: dict[str, Any] = {"loaded": loaded, "store": []}
        if s.config.paths is not None:
            try:
                body["store"] = await _in_thread(lambda: _store_listing(s.config.paths))
            except LlcudaError as exc:
                body["store_error"] = str(exc)
        return _json(body)

    async def runs(self, request: Any) -> Any:
        """Recent run records, newest first (``?limit=N``, default 50)."""
        n = _int_param(request, "limit", 50, 1, 10_000)
        return _json({"runs": list(reversed(self.state.runs))[:n]})

    async def tokenize(self, request: Any) -> Any:
        engine = self.state.ready_engine()
        body = P.parse_body(await _read_body(request, self.state.config.max_body_bytes))
        if "messages" in body:  # a chat: its prompt as the worker's template renders it
            s = self.state
            chat = P.parse_chat({"messages": body["messages"]}, s.config.sampling, s.limits())
            prompt = await _in_thread(lambda: engine.prompt_tokens(chat.request))
            return _json({"tokens": prompt})
        content = body.get("content")
        if not isinstance(content, str):
            raise P.RequestError("'content' (or 'messages') must be given", param="content")
        add_special = body.get("add_special", True) is not False
        tokens = await _in_thread(lambda: engine.tokenize(content, add_special, True))
        return _json({"tokens": tokens})

    # --- generation -----------------------------------------------------------------------

    async def chat(self, request: Any) -> Any:
        return await self._complete(request, chat=True)

    async def completions(self, request: Any) -> Any:
        return await self._complete(request, chat=False)

    async def _complete(self, request: Any, chat: bool) -> Any:
        s = self.state
        engine = s.ready_engine()
        body = P.parse_body(await _read_body(request, s.config.max_body_bytes))
        parse = P.parse_chat if chat else P.parse_completion
        parsed = parse(body, s.config.sampling, s.limits())
        bridge = _Bridge(s.waker)
        handle = await _in_thread(lambda: engine.submit(parsed.request, bridge.put, bridge.put))
        endpoint = "chat" if chat else "completions"
        self._record_when_done(handle, endpoint)
        if parsed.stream:
            from starlette.responses import StreamingResponse

            shaper = P.StreamShaper(chat, s.config.model_name, parsed.include_usage)
            events = self._events(bridge, handle, shaper)
            headers = {"cache-control": "no-cache", "x-accel-buffering": "no"}
            return StreamingResponse(events, media_type="text/event-stream", headers=headers)
        return await self._whole(request, bridge, handle, chat)

    def _record_when_done(self, handle: Any, endpoint: str) -> None:
        """Keep the run record (also of a cancelled request) once the engine settles it."""
        loop = asyncio.get_running_loop()
        state, model = self.state, self.state.config.model_name

        def done(future: Any) -> None:
            if future.cancelled() or future.exception() is not None:
                return
            with contextlib.suppress(RuntimeError):  # the loop is gone: shutting down
                loop.call_soon_threadsafe(state.add_run, endpoint, model, future.result())

        handle.future.add_done_callback(done)

    async def _events(
        self, bridge: _Bridge, handle: Any, shaper: P.StreamShaper
    ) -> AsyncIterator[bytes]:
        heartbeat = self.state.config.heartbeat_s
        finished = False
        try:
            yield shaper.opening() or P.HEARTBEAT
            while not finished:
                items = await bridge.get(heartbeat)
                if not items:
                    yield P.HEARTBEAT
                    continue
                out = []
                for item in items:
                    if isinstance(item, BaseException):
                        status = 400 if isinstance(item, UserInputError) else 500
                        out.append(shaper.error(str(item), status))
                        finished = True
                        break
                    if item.record is not None:
                        out.append(shaper.closing(item.text, item.record))
                        finished = True
                        break
                    out.append(shaper.token(item.text))
                yield b"".join(out)
        finally:
            if not finished:  # the client went away (or the server is cancelling us)
                handle.cancel()

    async def _whole(self, request: Any, bridge: _Bridge, handle: Any, chat: bool) -> Any:
        collect = asyncio.ensure_future(_collect(bridge))
        gone = asyncio.ensure_future(_wait_disconnect(request.receive))
        try:
            await asyncio.wait({collect, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not collect.done():
                handle.cancel()
                collect.cancel()
            gone.cancel()
        if not collect.done() or collect.cancelled():
            from starlette.responses import Response

            return Response(status_code=499)  # nobody is listening
        text, record = collect.result()
        return _json(P.whole_response(chat, self.state.config.model_name, text, record))


async def _collect(bridge: _Bridge) -> tuple[str, RunRecord]:
    parts: list[str] = []
    while True:
        for item in await bridge.get(3600.0):
            if isinstance(item, BaseException):
                raise item
            parts.append(item.text)
            if item.record is not None:
                return "".join(parts), item.record


async def _wait_disconnect(receive: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def _read_body(request: Any, limit: int) -> bytes:
    """The request body; a 413 past ``limit`` bytes (drained first, up to a hard cap)."""
    declared = request.headers.get("content-length")
    too_big = P.RequestError(f"the request body is larger than {limit} bytes", 413)
    if declared is not None and declared.isdigit() and int(declared) > BODY_DRAIN_LIMIT:
        raise too_big
    parts, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > BODY_DRAIN_LIMIT:
            raise too_big
        if size <= limit:
            parts.append(chunk)
    if size > limit:
        raise too_big
    return b"".join(parts)


def _int_param(request: Any, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise P.RequestError(f"'{name}' must be an integer", param=name) from None
    return max(lo, min(hi, value))


async def _in_thread(fn: Callable[[], Any]) -> Any:
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(fn)


def _store_listing(paths: Paths | None) -> list[dict[str, Any]]:
    if paths is None:
        return []
    try:
        from llcuda_tui.core.store import _store as store
    except ImportError:
        return []
    return [entry.to_json() for entry in store.list_models(paths)]


# --- running it --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Listen:
    """Where and how to listen."""

    host: str = "127.0.0.1"
    port: int = 8090
    tls_cert: str | None = None
    tls_key: str | None = None
    log_level: str = "warning"


def bind(listen: Listen, config: WorkerConfig) -> socket.socket:
    """A listening socket on ``listen.host:port`` (port 0 = any free port), refused
    (:func:`check_exposure`) when it is off loopback and ``config`` has no API key."""
    try:
        infos = socket.getaddrinfo(listen.host.strip("[]"), listen.port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        infos = []
    if not infos:
        raise UserInputError(f"cannot resolve {listen.host}")
    family, kind, proto, _, addr = infos[0]
    # proto must be IPPROTO_TCP: asyncio sets TCP_NODELAY only on such sockets (without it a
    # response's second write waits ~40 ms for a delayed ACK)
    sock = socket.socket(family, kind, proto or socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
        sock.listen(256)
    except OSError as exc:
        sock.close()
        raise LlcudaError(f"cannot listen on {listen.host}:{listen.port}: {exc.strerror}") from None
    sock.setblocking(False)
    try:
        check_exposure(config, sock)
    except UserInputError:
        sock.close()
        raise
    return sock


def base_url(listen: Listen, sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    scheme = "https" if listen.tls_cert else "http"
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}"


class _Uvicorn:
    """uvicorn's Server with our SIGTERM handling: drain, then exit 0 (no re-raised signal)."""

    def __init__(self, app: Any, state: WorkerState, listen: Listen, main_thread: bool) -> None:
        import uvicorn

        config = uvicorn.Config(
            app,
            log_level=listen.log_level,
            access_log=listen.log_level in ("debug", "info"),
            log_config=uvicorn.config.LOGGING_CONFIG if main_thread else None,
            ssl_certfile=listen.tls_cert,
            ssl_keyfile=listen.tls_key,
            # the drain timer cancels what still runs after the grace period; the extra second
            # only bounds idle keep-alive TLS connections that never answer close_notify
            timeout_graceful_shutdown=math.ceil(state.config.shutdown_grace_s) + 1,
            lifespan="on",
        )
        self.state = state
        outer = self

        class Server(uvicorn.Server):
            def handle_exit(self, sig: int, frame: Any) -> None:
                outer.state.drain()
                if self.should_exit:
                    self.force_exit = True
                self.should_exit = True

            @contextlib.contextmanager
            def capture_signals(self) -> Generator[None, None, None]:
                import signal

                if threading.current_thread() is not threading.main_thread():
                    yield
                    return
                sigs = (signal.SIGINT, signal.SIGTERM)
                old = {s: signal.signal(s, self.handle_exit) for s in sigs}
                try:
                    yield
                finally:
                    for s, handler in old.items():
                        signal.signal(s, handler)

        self.server = Server(config)
        self.config = config

    def check_tls(self) -> None:
        """Load the certificate now, so a bad one is one clear line (not a traceback later)."""
        import ssl

        if not self.config.is_ssl:
            return
        try:
            self.config.load()
        except (OSError, ssl.SSLError) as exc:
            raise UserInputError(f"cannot use the TLS certificate/key: {exc}") from None


def serve(
    config: WorkerConfig, listen: Listen, on_ready: Callable[[str], None] | None = None
) -> int:
    """Run a worker in this (main) thread until SIGTERM/SIGINT; returns the exit code.

    ``on_ready(url)`` is called once the model is loaded. A failed load stops the server and
    raises its error (ModelLoadError, EngineError).
    """
    sock = bind(listen, config)
    holder: dict[str, Any] = {}

    def on_load_error(exc: BaseException) -> None:
        holder["server"].server.should_exit = True

    state = WorkerState(config, on_load_error=on_load_error)
    uv = _Uvicorn(create_app(state), state, listen, main_thread=True)
    holder["server"] = uv
    uv.check_tls()
    url = base_url(listen, sock)
    if on_ready is not None:

        def announce() -> None:
            state.loaded.wait()
            if state.status == "ready":
                on_ready(url)

        threading.Thread(target=announce, daemon=True).start()
    try:
        uv.server.run(sockets=[sock])
    finally:
        sock.close()
    if state.error is not None:
        raise state.error
    return 0


class WorkerServer:
    """A worker on a background thread, on 127.0.0.1 and a free port by default (tests,
    benchmarks, a TUI that serves its own model). ``with WorkerServer(cfg) as w: w.url``."""

    def __init__(
        self,
        config: WorkerConfig,
        listen: Listen | None = None,
        loader: Callable[[], BatchEngine] | None = None,
    ) -> None:
        self.listen = listen or Listen(port=0)
        self.state = WorkerState(config, loader=loader)
        self._uv = _Uvicorn(create_app(self.state), self.state, self.listen, main_thread=False)
        self._uv.check_tls()
        self._sock = bind(self.listen, config)
        self.url = base_url(self.listen, self._sock)
        self._thread = threading.Thread(target=self._run, name="llcuda-worker-http", daemon=True)
        self._error: BaseException | None = None

    def _run(self) -> None:
        try:
            self._uv.server.run(sockets=[self._sock])
        except BaseException as exc:  # reported by start()
            self._error = exc

    def start(self, wait_loaded: bool = True, timeout_s: float = 120.0) -> WorkerServer:
        """Start serving; with ``wait_loaded``, return once the model is loaded (or raise)."""
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._uv.server.started:
            if self._error is not None or not self._thread.is_alive():
                raise LlcudaError(f"the worker did not start: {self._error}")
            if time.monotonic() > deadline:
                raise LlcudaError("the worker did not start in time")
            time.sleep(0.01)
        if wait_loaded:
            if not self.state.loaded.wait(max(0.0, deadline - time.monotonic())):
                raise LlcudaError("the worker's model did not load in time")
            if self.state.error is not None:
                self.stop()
                raise self.state.error
        return self

    def drain(self) -> None:
        """What SIGTERM does: stop taking requests, let in-flight ones finish, then exit."""
        self._uv.server.handle_exit(15, None)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop now: close connections, cancel what runs, free the model."""
        server = self._uv.server
        engine = self.state.engine
        if engine is not None:
            engine.cancel()
        server.should_exit = True
        self._thread.join(min(1.0, timeout_s))
        if self._thread.is_alive():  # idle keep-alive (TLS) connections: don't wait for them
            server.force_exit = True
            self._thread.join(timeout_s)
        self._sock.close()
        self.state.close()

    def __enter__(self) -> WorkerServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
