"""What a worker runs with and keeps between requests: :class:`WorkerConfig` and
:class:`WorkerState` (the engine once loaded, run records, metrics, GPU telemetry, shutdown).

The model loads on a background thread after the socket is bound, so ``/health`` answers at
once. On SIGTERM the worker stops taking requests (:meth:`WorkerState.drain`), lets in-flight
ones run for ``shutdown_grace_s`` and then cancels the rest.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from llcuda_tui import __version__
from llcuda_tui.core.config import Paths, SamplingDefaults
from llcuda_tui.core.engine import (
    Chunk,
    Embedder,
    EmbeddingsUnavailable,
    EngineConfig,
    GenerationHandle,
    GenerationRequest,
    LoadInfo,
    RunRecord,
)
from llcuda_tui.core.worker import protocol as P
from llcuda_tui.core.worker.batch import BatchEngine, BatchStats
from llcuda_tui.core.worker.bridge import Waker
from llcuda_tui.core.worker.metrics import WorkerMetrics

if TYPE_CHECKING:
    from llcuda_tui.core.engine import ChatTemplate
    from llcuda_tui.core.gpu import GpuReading, GpuSample, GpuSampler
    from llcuda_tui.core.worker.model_use import ModelUse
    from llcuda_tui.core.worker.router import ModelRouter
    from llcuda_tui.core.worker.router_config import ModelsConfig


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
    header_timeout_s: float = 10.0
    """A request head must arrive within this long of the connection (or of its first byte on
    a keep-alive connection), else 408 and the connection closes (slowloris clients)."""
    body_timeout_s: float = 30.0
    """A request body must arrive within this long of its head, else the connection closes."""
    idle_timeout_s: float = 5.0
    """A keep-alive connection with no next request for this long is closed (uvicorn's own)."""
    max_connections_per_client: int = 128
    """Open connections one client address may hold; a request on one more gets a 429. 0: no
    cap. Above our own heaviest client from one machine (64 benchmark streams)."""
    heartbeat_s: float = P.HEARTBEAT_S
    run_history: int = 256
    paths: Paths | None = None
    """Where the worker's model store lives (for /llcuda/v1/models)."""
    cors_origins: tuple[str, ...] = ()
    """Browser origins allowed to call the worker (``"*"``: any); empty: CORS off. Preflights
    are answered before the API key is checked (browsers send them without credentials)."""
    embeddings: bool = False
    """Serve /v1/embeddings for a generative model too (llama-server's ``--embeddings``): its
    GGUF's pooling if it declares one, else mean pooling of the last hidden state. A model whose
    GGUF declares a pooling type (a BERT-style encoder) embeds without it."""
    pooling: str | None = None
    """mean, cls or last: pool so, whatever the GGUF declares (implies ``embeddings``)."""
    models: ModelsConfig | None = None
    """Serve many models, loaded on demand by the request's ``model`` (:mod:`.router`);
    ``engine`` is then the settings every model loads with (its ``model_path`` unused).
    None: serve the one model of ``engine``, loaded at start."""


class ServedEngine(Protocol):
    """What the worker needs of its engine: a :class:`BatchEngine`, or the MPI pool's
    ``PoolEngine`` (the same interface over several ranks)."""

    info: LoadInfo
    on_step: Callable[[], None] | None
    """Set by the worker: called on the engine thread after each step."""

    def submit(
        self,
        request: GenerationRequest,
        on_chunk: Callable[[Chunk], None],
        on_error: Callable[[BaseException], None] | None = None,
    ) -> GenerationHandle: ...

    def cancel(self) -> None: ...

    def close(self) -> None: ...

    @property
    def template(self) -> ChatTemplate:
        """The model's chat template (what it does with tools)."""
        ...

    def stats(self) -> BatchStats: ...

    def tokenize(
        self, text: str, add_special: bool = True, parse_special: bool = True
    ) -> list[int]: ...

    def prompt_tokens(self, request: GenerationRequest) -> list[int]: ...

    def detokenize(self, tokens: Sequence[int]) -> str: ...

    def fim_tokens(self) -> tuple[int, int, int] | None:
        """Fill-in-the-middle tokens (prefix, suffix, middle), None without them."""
        ...


@runtime_checkable
class EmbedSource(Protocol):
    """An engine that can open an embedding context on its model (:class:`BatchEngine`; the
    MPI pool cannot)."""

    def open_embedder(
        self, pooling: str | None = None, n_ctx: int | None = None, default: str | None = None
    ) -> Embedder: ...


class GpuSource(Protocol):
    """What ``/llcuda/v1/gpu`` reads: a :class:`GpuSampler` (or the pool's view over nodes)."""

    interval_s: float

    @property
    def latest(self) -> GpuSample | None: ...

    def sample(self) -> GpuSample: ...

    def history(self, index: int) -> list[GpuReading]: ...


class WorkerState:
    """The loaded engine (once loaded), run records, metrics, GPU telemetry, shutdown state."""

    def __init__(
        self,
        config: WorkerConfig,
        loader: Callable[[], ServedEngine] | None = None,
        on_load_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.config = config
        self._loader = loader or (lambda: BatchEngine.load(config.engine, config.parallel))
        self._on_load_error = on_load_error
        self.engine: ServedEngine | None = None
        self.embedder: Embedder | None = None
        """The embedding context /v1/embeddings uses, once loaded; None: see embed_refusal."""
        self.embed_refusal = "the model is not loaded"
        """Why there is no embedder (the message of /v1/embeddings' 400)."""
        self.status = "loading"
        """loading, ready, error, closed."""
        self.error: BaseException | None = None
        self.draining = False
        self.loaded = threading.Event()
        """Set when loading ended (either way)."""
        self.runs: deque[dict[str, Any]] = deque(maxlen=max(1, config.run_history))
        self.metrics = WorkerMetrics()
        self.created = int(time.time())
        self._gpu: GpuSampler | None = None
        self._gpu_lock = threading.Lock()
        self._drain_timer: threading.Timer | None = None
        self.waker = Waker()
        self._state_lock = threading.Lock()
        self.models: ModelRouter | None = None
        """The models of a worker serving many (``config.models``); None: one model."""
        if config.models is not None:
            from llcuda_tui.core.worker.router import ModelRouter

            self.models = ModelRouter(
                config.models, config.engine, config.parallel, config.paths,
                self.metrics.registry, on_step=self.waker.flush,
            )  # fmt: skip

    def start_loading(self) -> None:
        if self.models is not None:  # models load on demand: ready at once
            assert self.waker.loop is not None
            self.models.start(self.waker.loop)
            self.status = "ready"
            self.loaded.set()
            return
        threading.Thread(target=self._load, name="llcuda-worker-load", daemon=True).start()

    def _load(self) -> None:
        engine: ServedEngine | None = None
        try:
            engine = self._loader()
            self._open_embedder(engine)
        except BaseException as exc:  # reported by /health and the CLI
            if engine is not None:
                engine.close()
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

    def _open_embedder(self, engine: ServedEngine) -> None:
        """Open :attr:`embedder` when embeddings are asked for or the GGUF declares a pooling
        type; otherwise say why not in :attr:`embed_refusal`."""
        cfg = self.config
        asked = cfg.embeddings or cfg.pooling is not None
        if not isinstance(engine, EmbedSource):
            if asked:
                raise EmbeddingsUnavailable("this engine (an MPI pool) does not embed")
            self.embed_refusal = "this worker's engine (an MPI pool) does not embed"
            return
        try:
            self.embedder = engine.open_embedder(cfg.pooling, default="mean" if asked else None)
        except EmbeddingsUnavailable:
            if asked:
                raise
            self.embed_refusal = (
                f"the model '{cfg.model_name}' is a generative model (its GGUF declares no "
                "pooling type) and this worker was started without --embeddings: start it with "
                "'llcuda serve --embeddings' (mean pooling of the last hidden state)"
            )

    def ready_engine(self) -> ServedEngine:
        """The engine, or a 503 while loading, after a failed load, or when shutting down
        (a 400 on a worker of many models: the request must name one, :meth:`use_model`)."""
        if self.draining or self.status == "closed":
            raise P.RequestError("the worker is shutting down", 503)
        if self.models is not None:
            raise P.RequestError("this worker serves several models: name one", param="model")
        if self.engine is None:
            if self.status == "error":
                raise P.RequestError(f"the model failed to load: {self.error}", 503)
            raise P.RequestError("the model is still loading", 503)
        return self.engine

    def check_ready(self) -> None:
        """A 503 unless the worker takes requests now (one model: its engine is loaded)."""
        if self.models is None:
            self.ready_engine()
        elif self.draining or self.status == "closed":
            raise P.RequestError("the worker is shutting down", 503)

    async def use_model(self, body: dict[str, Any]) -> ModelUse:
        """The engine for a request ``body`` (its ``model`` and ``keep_alive`` on a worker of
        many models; the one engine otherwise), held until the use is released."""
        if self.models is None:
            from llcuda_tui.core.worker.model_use import ModelUse

            name = self.config.model_name
            return ModelUse(self.ready_engine(), name, name)
        self.check_ready()
        return await self.models.acquire(body.get("model"), body.get("keep_alive"))

    def stats(self) -> BatchStats | None:
        """The slot loop's stats (a worker of many models: all loaded ones added up)."""
        if self.models is not None:
            return self.models.stats()
        engine = self.engine
        return engine.stats() if engine is not None else None

    def cancel(self) -> None:
        """Cancel every generation (every model's)."""
        engine = self.engine
        if engine is not None:
            engine.cancel()
        if self.models is not None:
            self.models.cancel_all()

    def drain(self) -> None:
        """Stop taking requests; cancel what still runs after ``shutdown_grace_s``."""
        if self.draining:
            return
        self.draining = True
        if self.models is not None:
            self.models.drain()
        if self.engine is not None or self.models is not None:
            self._drain_timer = threading.Timer(self.config.shutdown_grace_s, self.cancel)
            self._drain_timer.daemon = True
            self._drain_timer.start()

    def close(self) -> None:
        """Free the engine (cancelling what runs) and stop GPU sampling. Idempotent."""
        with self._state_lock:
            self.status = "closed" if self.status != "error" else self.status
            engine, self.engine = self.engine, None
            self.embedder = None  # freed with the engine's model
        if self._drain_timer is not None:
            self._drain_timer.cancel()
        if engine is not None:
            engine.close()
        if self.models is not None:
            self.models.close()
        gpu, self._gpu = self._gpu, None
        if gpu is not None:
            gpu.close()

    def add_run(self, endpoint: str, model: str, record: RunRecord) -> None:
        """Count a finished generation in the metrics and keep its record for /runs."""
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

    def gpu_sampler(self) -> GpuSource:
        """NVML sampling starts with the first request for it (1 s interval, 5 min history)."""
        with self._gpu_lock:
            if self._gpu is None:
                from llcuda_tui.core.gpu import GpuSampler

                self._gpu = GpuSampler(interval_s=1.0, history=300, pcie=False)
                self._gpu.start()
            return self._gpu

    def info(self) -> dict[str, Any]:
        """What ``/llcuda/v1/info`` answers: status, model, limits, LoadInfo, slot stats."""
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
            "embeddings": None,
        }
        if self.error is not None:
            out["error"] = str(self.error)
        if engine is not None:
            out["load"] = asdict(engine.info)
            stats = engine.stats()
            out["stats"] = {**asdict(stats), "kv_usage": stats.kv_usage}
        embedder = self.embedder
        if embedder is not None:
            out["embeddings"] = {
                "pooling": embedder.pooling,
                "dimensions": embedder.n_embd,
                "n_ctx": embedder.n_ctx,
            }
        return out

    def limits(self) -> P.Limits:
        """What one request may ask for: max_tokens up to the configured cap or the context."""
        engine = self.engine
        if engine is not None:
            n_ctx = engine.info.n_ctx
        elif self.models is not None:  # the request's model is not known yet
            n_ctx = self.models.largest_ctx() or 1 << 20
        else:
            n_ctx = self.config.engine.n_ctx or 1 << 20
        cap = self.config.max_tokens or n_ctx
        return P.Limits(max_tokens=cap, default_max_tokens=self.config.sampling.max_tokens)
