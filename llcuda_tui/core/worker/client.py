"""A remote worker behind the local engine's interface: :class:`RemoteEngine` (over ``httpx``).

``stream(request)`` yields :class:`Chunk`\\ s whose last one carries a :class:`RunRecord`;
``submit``, ``generate`` and ``cancel`` work as on :class:`Engine`. It talks to ``llcuda serve``
workers (which also give GPU telemetry, the store listing and run records) and to any other
OpenAI-compatible server such as ``llama-server`` (generation and the model list only).

Timings in the records are as the client saw them (TTFT, token times and decode speed include
the network); prefill figures and the stop reason are the worker's. Requests always stream, so
a dead worker is noticed fast: a killed one closes the connection at once, and an llcuda worker
sends a heartbeat every 0.5 s (also while a worker of many models loads the request's model:
``loading`` says which), so silence longer than ``read_timeout_s`` (2 s) is an error too.
Every failure is a one-line :class:`WorkerError` (or UserInputError for a refused request).

One module on purpose (about 700 lines): :class:`RemoteEngine` and the worker's telemetry
(:class:`WorkerGpuPoller`, the sample decoding) share one connection setup, one error
translation and one URL/TLS handling (with :class:`.access.WorkerAccess`, which holds the key
and the CA), and are one concept: a worker seen from this side of the wire.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields, replace
from typing import Any
from urllib.parse import urlsplit

from llcuda_tui.core.engine import (
    Chunk,
    EngineBase,
    GenerationHandle,
    GenerationRequest,
    LoadInfo,
    OnChunk,
    OnError,
    RunRecord,
)
from llcuda_tui.core.errors import CountUnavailable, LlcudaError, UserInputError
from llcuda_tui.core.gpu import GpuProcess, GpuReading, GpuSample, MigDevice
from llcuda_tui.core.worker import protocol as P

DEFAULT_TIMEOUT_S = 2.0
GENERIC_READ_TIMEOUT_S = 300.0
"""Servers without heartbeats (llama-server) may be silent through a long prefill."""
SLOW_CALL_TIMEOUT_S = 15.0
"""For calls that may take a while on the worker (first NVML read, store listing)."""
LOAD_POLL_S = 0.25
"""How often a call waiting for a worker's model to load asks whether it is in."""
LOAD_TRIES = 3
"""Times a call naming the model is sent, when each timed out while the model loaded."""


class WorkerError(LlcudaError):
    """A worker could not be reached, stopped answering, or failed a request."""


class _TimedOut(WorkerError):
    """No reply in time (a model naming call may wait for the model's load and try again)."""


@dataclass(frozen=True)
class WorkerInfo:
    """What a worker said about itself."""

    url: str
    kind: str
    """'llcuda' (``llcuda serve``) or 'openai' (any other OpenAI-compatible server)."""
    model: str
    status: str
    """ok/ready, loading, error, draining (llcuda); 'ok' for other servers that answered."""
    parallel: int | None = None
    features: frozenset[str] = frozenset()
    """Of: 'gpu', 'store', 'runs', 'tokenize', 'metrics' (llcuda workers have them all)."""
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class RemoteGpu:
    """A worker's GPUs now, and each GPU's recent readings (oldest first)."""

    sample: GpuSample
    history: dict[int, list[GpuReading]]
    interval_s: float


@dataclass(frozen=True)
class WorkerGpu:
    """One poll of a worker's GPU telemetry: what it reported, or why it could not be read."""

    url: str
    gpu: RemoteGpu | None
    """None when the worker could not be asked (``error`` says why)."""
    error: str | None = None

    @property
    def reachable(self) -> bool:
        return self.gpu is not None


class WorkerGpuPoller:
    """Polls one worker's GPUs with :meth:`poll` (blocking: call it off the UI thread).

    It never raises: a worker that is down gives a :class:`WorkerGpu` whose ``error`` says so,
    and the next poll connects again, so a worker that comes back is picked up."""

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        *,
        history: int = 60,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        verify: bool | str = True,
    ) -> None:
        self.url = normalize_url(url)
        self.api_key = api_key
        self.verify = verify
        self.history = history
        self.timeout_s = timeout_s
        self._engine: RemoteEngine | None = None
        self._lock = threading.Lock()
        self._closed = False

    def poll(self) -> WorkerGpu:
        with self._lock:
            try:
                if self._closed:
                    raise WorkerError(f"no longer polling worker {self.url}")
                engine = self._engine
                if engine is None:
                    engine = RemoteEngine.connect(
                        self.url, self.api_key, timeout_s=self.timeout_s, verify=self.verify
                    )
                    self._engine = engine
                    if self._closed:  # closed while connecting
                        self._drop()
                        raise WorkerError(f"no longer polling worker {self.url}")
                return WorkerGpu(self.url, engine.gpu(self.history))
            except LlcudaError as exc:
                self._drop()
                return WorkerGpu(self.url, None, str(exc))
            except (ValueError, KeyError, TypeError) as exc:  # not an llcuda worker's answer
                self._drop()
                return WorkerGpu(self.url, None, f"worker {self.url} sent bad GPU data: {exc}")
            except RuntimeError:  # its client was closed mid-poll by close()
                return WorkerGpu(self.url, None, f"no longer polling worker {self.url}")

    def close(self) -> None:
        """Stop polling; does not wait for a poll in flight (it fails and is not retried)."""
        self._closed = True
        self._drop()

    def _drop(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.close()


class RemoteEngine(EngineBase):
    """A worker at ``url`` used like a local :class:`Engine`. Create with :meth:`connect`."""

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        *,
        model: str | None = None,
        verify: bool | str = True,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        read_timeout_s: float | None = None,
    ) -> None:
        import httpx

        self.url = normalize_url(url)
        self.model = model
        self._timeout_s = timeout_s
        self._read_timeout_s = read_timeout_s
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(
            base_url=self.url,
            headers=headers,
            verify=_ssl_context(verify),
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=32),
        )
        self._inflight: set[threading.Event] = set()
        self._lock = threading.Lock()
        self.loading: str | None = None
        """The model a request of this client waits for the worker to load (a worker of many
        models says so in its heartbeats); None when none waits."""
        self.remote: WorkerInfo
        self.info: LoadInfo

    # --- lifecycle ----------------------------------------------------------------------------

    @classmethod
    def connect(
        cls,
        url: str,
        api_key: str | None = None,
        *,
        wait_loaded_s: float = 0.0,
        give_up: Callable[[], bool] | None = None,
        **kwargs: Any,
    ) -> RemoteEngine:
        """Connect and read what the worker serves (within ``timeout_s``, default 2 s).

        With ``wait_loaded_s``, wait that long for a worker that is still loading its model,
        or until ``give_up()`` is true (the caller was cancelled).
        """
        engine = cls(url, api_key, **kwargs)
        try:
            deadline = time.monotonic() + wait_loaded_s
            while True:
                engine.refresh()
                if engine.remote.status != "loading" or time.monotonic() >= deadline:
                    break
                if give_up is not None and give_up():
                    break
                time.sleep(0.1)
        except BaseException:
            engine.close()
            raise
        return engine

    def refresh(self) -> WorkerInfo:
        """Ask the worker what it is and serves now (sets ``remote`` and ``info``)."""
        resp = self._get(f"{P.EXT_PREFIX}/info", ok=(200, 404))
        if resp.status_code == 200:
            raw = resp.json()
            self.remote = WorkerInfo(
                url=self.url,
                kind="llcuda",
                model=str(raw.get("model", "")),
                status=str(raw.get("status", "?")),
                parallel=raw.get("parallel"),
                features=frozenset({"gpu", "store", "runs", "tokenize", "metrics"}),
                raw=raw,
            )
        else:
            data = self._get("/v1/models").json().get("data") or [{}]
            name = self.model or str(data[0].get("id", "")) or "default"
            self.remote = WorkerInfo(self.url, "openai", name, "ok", raw={"models": data})
        if self.model is None:
            self.model = self.remote.model
        self.info = _load_info(self.remote, self.url)
        return self.remote

    def close(self) -> None:
        """Cancel what is in flight and close the connections. Idempotent."""
        self.cancel()
        self._http.close()

    # --- generation ---------------------------------------------------------------------------

    def stream(self, request: GenerationRequest) -> Iterator[Chunk]:
        """Chunks as they arrive; the last carries the RunRecord. Closing the iterator early
        cancels the request on the worker (it frees the slot at once)."""
        # not the base's (submit on a thread, a queue between): here the caller's thread reads
        # the HTTP stream itself, and closing the iterator closes the connection at once
        cancel = threading.Event()
        with self._lock:
            self._inflight.add(cancel)
        try:
            yield from self._stream(request, cancel)
        finally:
            with self._lock:
                self._inflight.discard(cancel)

    def submit(
        self, request: GenerationRequest, on_chunk: OnChunk, on_error: OnError | None = None
    ) -> GenerationHandle:
        """Run a generation on a thread of its own; ``on_chunk`` is called there per token."""
        handle = GenerationHandle(request)
        with self._lock:
            self._inflight.add(handle.cancel_event)

        def run() -> None:
            record = None
            try:
                for chunk in self._stream(request, handle.cancel_event):
                    on_chunk(chunk)
                    record = chunk.record or record
                assert record is not None
                handle.future.set_result(record)
            except BaseException as exc:  # handed to the caller
                handle.future.set_exception(exc)
                if on_error is not None:
                    on_error(exc)
            finally:
                with self._lock:
                    self._inflight.discard(handle.cancel_event)

        threading.Thread(target=run, name="llcuda-remote", daemon=True).start()
        return handle

    def cancel(self) -> None:
        """Stop every generation in flight on this client (within one token or heartbeat)."""
        with self._lock:
            for event in self._inflight:
                event.set()

    def _stream(self, request: GenerationRequest, cancel: threading.Event) -> Iterator[Chunk]:
        import httpx

        path, body = P.request_payload(request, self.model)
        t0 = time.perf_counter()
        try:
            with self._http.stream("POST", path, json=body, timeout=self._gen_timeout()) as resp:
                if resp.status_code != 200:
                    resp.read()
                    raise self._refused(resp)
                yield from _read_stream(self._noting_loads(resp.iter_lines()), t0, cancel, self.url)
        except httpx.TimeoutException:
            raise WorkerError(
                f"worker {self.url} stopped answering (nothing for "
                f"{self._read_timeout()} s); is it still running?"
            ) from None
        except httpx.TransportError as exc:
            raise WorkerError(_transport_message(self.url, exc)) from None

    def _noting_loads(self, lines: Iterator[str]) -> Iterator[str]:
        """``lines`` as they come, with the worker's loading heartbeats noted in ``loading``
        (until the first event after them)."""
        prefix = P.LOADING_HEARTBEAT
        try:
            for line in lines:
                if line.startswith(prefix):
                    self.loading = line[len(prefix) :].strip() or "?"
                elif self.loading is not None and line.startswith("data:"):
                    self.loading = None
                yield line
        finally:
            self.loading = None

    # --- what else a worker tells ---------------------------------------------------------------

    def health(self) -> str:
        """'ok', 'loading', 'error', 'shutting down' (or 'unreachable')."""
        import httpx

        try:
            resp = self._http.get("/health")
        except httpx.HTTPError:
            return "unreachable"
        try:
            return str(resp.json().get("status", resp.status_code))
        except ValueError:
            return "ok" if resp.status_code == 200 else str(resp.status_code)

    def models(self) -> list[dict[str, Any]]:
        """What the worker can serve: its loaded model first, then its store (llcuda), as
        dicts with at least 'id' ('loaded': True on the one it serves)."""
        if self.remote.kind != "llcuda":
            data = self._get("/v1/models").json().get("data") or []
            return [{**m, "loaded": m.get("id") == self.model} for m in data]
        body = self._get(f"{P.EXT_PREFIX}/models", timeout=SLOW_CALL_TIMEOUT_S).json()
        if "models" in body:  # a worker of many models: each store entry has its state
            held = [{**m, "loaded": m.get("state") == "loaded"} for m in body["models"]]
            shown = {m.get("id") for m in held}
            store = [
                {**e, "id": e.get("name"), "loaded": e.get("state") == "loaded"}
                for e in body.get("store", [])
                if e.get("name") not in shown
            ]
            return [*held, *store]
        loaded = {**body.get("loaded", {}), "loaded": True}
        store = [{**e, "id": e.get("name"), "loaded": False} for e in body.get("store", [])]
        return [loaded, *store]

    def load_model(self, name: str, keep_alive: float | str | None = None) -> dict[str, Any]:
        """Have a worker of many models load ``name`` now (its state once loaded); ``keep_alive``
        as a request's (seconds, "5m", 0, -1). Waits as long as the load takes."""
        body = {} if keep_alive is None else {"keep_alive": keep_alive}
        path = f"{P.EXT_PREFIX}/models/{name}/load"
        return dict(self._request("POST", path, json=body, timeout=None).json())

    def unload_model(self, name: str) -> dict[str, Any]:
        """Have a worker of many models unload ``name`` once its requests in flight are done."""
        path = f"{P.EXT_PREFIX}/models/{name}/unload"
        return dict(self._request("POST", path, timeout=None).json())

    def gpu(self, history: int = 60) -> RemoteGpu:
        """The worker's GPUs (llcuda workers; a sample in state 'unavailable' for others)."""
        if "gpu" not in self.remote.features:
            sample = GpuSample(
                time.monotonic(),
                time.time(),
                "unavailable",
                "this server does not report GPU telemetry",
            )
            return RemoteGpu(sample, {}, 0.0)
        body = self._get(
            f"{P.EXT_PREFIX}/gpu", params={"history": history}, timeout=SLOW_CALL_TIMEOUT_S
        ).json()
        hist = {int(k): [reading_from_dict(r) for r in v] for k, v in body["history"].items()}
        return RemoteGpu(sample_from_dict(body["snapshot"]), hist, float(body["interval_s"]))

    def runs(self, limit: int = 50) -> list[dict[str, Any]]:
        """Recent runs on the worker, newest first: {'id', 'created', 'endpoint', 'model',
        'record': RunRecord}."""
        if "runs" not in self.remote.features:
            return []
        runs = self._get(f"{P.EXT_PREFIX}/runs", params={"limit": limit}).json()["runs"]
        return [{**r, "record": P.record_from_dict(r["record"])} for r in runs]

    def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        """Token ids of ``text`` in the worker's model (llcuda workers)."""
        if "tokenize" not in self.remote.features:
            raise UserInputError(f"{self.url} does not offer tokenisation")
        body: dict[str, Any] = {"content": text, "add_special": add_special}
        if self.model:  # a worker of many models tokenizes with the model named
            body["model"] = self.model
        resp = self._model_request(f"{P.EXT_PREFIX}/tokenize", body)
        return [int(t) for t in resp.json()["tokens"]]

    def count_tokens(self, request: GenerationRequest) -> int:
        """Prompt tokens of a request; a chat's are counted by the worker, through its
        template (llcuda workers)."""
        if request.tokens is not None:
            return len(request.tokens)
        if request.prompt is not None:
            return len(self.tokenize(request.prompt))
        if "tokenize" not in self.remote.features:
            raise CountUnavailable(f"not counted: {self.url} is not an llcuda worker")
        resp = self._model_request(
            f"{P.EXT_PREFIX}/tokenize",
            {"messages": list(request.messages or []), "model": self.model},
        )
        return len(resp.json()["tokens"])

    # --- HTTP helpers -------------------------------------------------------------------------

    def _read_timeout(self) -> float:
        if self._read_timeout_s is not None:
            return self._read_timeout_s
        kind = getattr(getattr(self, "remote", None), "kind", "llcuda")
        return self._timeout_s if kind == "llcuda" else GENERIC_READ_TIMEOUT_S

    def _gen_timeout(self) -> Any:
        import httpx

        t = self._timeout_s
        return httpx.Timeout(connect=t, read=self._read_timeout(), write=t, pool=None)

    def _model_request(self, path: str, body: dict[str, Any]) -> Any:
        """POST ``body``, which names this client's model, and its reply.

        On a worker of many models the reply may wait for the model to load (it was never
        loaded, or unloaded when idle), and a JSON reply carries no heartbeat. So a reply
        late past the usual timeout is not taken for a dead worker at once: while the worker
        says the model is loading (``GET /v1/models/{id}``, answered at once during a load)
        the call waits, each answer proving the worker alive within that same timeout, then
        sends the request again (these calls are idempotent: tokenizing). A longer timeout
        instead would be wrong either way: a hung worker unnoticed for that long, and still
        too short for a large model on a slow disk."""
        for attempt in range(LOAD_TRIES):
            try:
                return self._request("POST", path, json=body)
            except _TimedOut:
                if attempt == LOAD_TRIES - 1 or not self._waited_for_load(body.get("model")):
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _waited_for_load(self, name: Any) -> bool:
        """Wait while the worker says model ``name`` is loading (or waiting for room); True
        when it was, or is loaded now (a request for it may then get its answer in time)."""
        from urllib.parse import quote

        remote = getattr(self, "remote", None)
        if not isinstance(name, str) or not name or remote is None or "router" not in remote.raw:
            return False  # one model: it does not load on request
        try:
            seen = False
            while True:
                resp = self._get(f"/v1/models/{quote(name, safe='')}", ok=(200, 404))
                state = resp.json().get("state") if resp.status_code == 200 else None
                if state != "loading":
                    return seen or state == "loaded"
                seen, self.loading = True, name
                time.sleep(LOAD_POLL_S)
        finally:
            self.loading = None

    def _get(self, path: str, ok: tuple[int, ...] = (200,), **kwargs: Any) -> Any:
        return self._request("GET", path, ok, **kwargs)

    def _request(self, method: str, path: str, ok: tuple[int, ...] = (200,), **kwargs: Any) -> Any:
        import httpx

        try:
            resp = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise _TimedOut(f"worker {self.url} did not answer in time") from None
        except httpx.TransportError as exc:
            raise WorkerError(_transport_message(self.url, exc)) from None
        if resp.status_code not in ok:
            raise self._refused(resp)
        return resp

    def _refused(self, resp: Any) -> LlcudaError:
        message = _error_message(resp)
        code = resp.status_code
        if code == 401:
            return UserInputError(f"worker {self.url} refused the API key ({message})")
        if 400 <= code < 500:
            return UserInputError(f"worker {self.url}: {message}")
        return WorkerError(f"worker {self.url} failed ({code}): {message}")


def _read_stream(
    lines: Iterator[str], t0: float, cancel: threading.Event, url: str
) -> Iterator[Chunk]:
    """Chunks of one SSE stream; the record is built when the stream ends."""
    times: list[float] = []
    server_record: dict[str, Any] | None = None
    usage: dict[str, Any] = {}
    finish: str | None = None
    tail = ""
    for event in P.iter_events(lines):
        if cancel.is_set():
            break
        if event is None:
            continue
        if "error" in event:
            err = event["error"]
            message = err.get("message", err) if isinstance(err, dict) else err
            raise WorkerError(f"worker {url} failed the request: {message}")
        usage = event.get("usage") or usage
        ext = event.get("llcuda")
        if isinstance(ext, dict) and isinstance(ext.get("record"), dict):
            server_record = ext["record"]
        text, reason = P.event_text(event)
        if text is None:
            continue
        if reason is None:
            times.append(time.perf_counter() - t0)
            yield Chunk(text)
        else:
            finish, tail = reason, tail + text
    else:
        if finish is None:
            raise WorkerError(f"worker {url} ended the stream early (did it stop?)")
    t_end = time.perf_counter()
    stop_reason = "cancelled" if finish is None else None
    record = client_record(server_record, usage, times, t_end - t0, stop_reason, finish)
    yield Chunk(tail, replace(record, backend=record.backend or f"remote {url}"))


def client_record(
    server: dict[str, Any] | None,
    usage: dict[str, Any],
    times: list[float],
    total_s: float,
    stop_reason: str | None,
    finish_reason: str | None,
) -> RunRecord:
    """A RunRecord with the worker's facts and the client's timings."""
    base = P.record_from_dict(server or {})
    n = len(times)
    decode_s = times[-1] - times[0] if n > 1 else 0.0
    if stop_reason is None:
        stop_reason = base.stop_reason if server else _stop_from_finish(finish_reason)
    prompt_tokens = base.prompt_tokens or int(usage.get("prompt_tokens") or 0)
    return replace(
        base,
        prompt_tokens=prompt_tokens,
        generated_tokens=base.generated_tokens
        if server
        else int(usage.get("completion_tokens") or n),
        prompt_tokens_evaluated=base.prompt_tokens_evaluated if server else prompt_tokens,
        ttft_s=times[0] if times else total_s,
        decode_s=decode_s,
        decode_tokens_per_s=(n - 1) / decode_s if decode_s > 0 else 0.0,
        total_s=total_s,
        stop_reason=stop_reason,
        token_times_s=times,
    )


def _stop_from_finish(reason: str | None) -> str:
    return {"stop": "eos", "length": "length"}.get(reason or "", reason or "stop")


# --- converting what workers send ----------------------------------------------------------------


def sample_from_dict(d: dict[str, Any]) -> GpuSample:
    """A GpuSample sent by a worker (``time_s`` is the local monotonic clock at arrival)."""
    return GpuSample(
        time_s=time.monotonic(),
        wall_time=float(d.get("time") or time.time()),
        state=str(d.get("state", "error")),
        message=str(d.get("message", "")),
        driver_version=d.get("driver_version"),
        cuda_driver_version=d.get("cuda_driver_version"),
        nvml_version=d.get("nvml_version"),
        gpus=tuple(reading_from_dict(g) for g in d.get("gpus", [])),
    )


def reading_from_dict(d: dict[str, Any]) -> GpuReading:
    """A GpuReading from its ``to_dict()`` form."""
    values = _known(GpuReading, d)
    if values.get("processes") is not None:
        values["processes"] = tuple(GpuProcess(**_known(GpuProcess, p)) for p in d["processes"])
    values["mig_devices"] = tuple(
        MigDevice(**_known(MigDevice, m)) for m in d.get("mig_devices", [])
    )
    if values.get("clock_event_reasons") is not None:
        values["clock_event_reasons"] = tuple(values["clock_event_reasons"])
    return GpuReading(**values)


def _known(cls: Any, d: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in d.items() if k in names}


def _load_info(remote: WorkerInfo, url: str) -> LoadInfo:
    load = remote.raw.get("load") if remote.kind == "llcuda" else None
    if isinstance(load, dict):
        return LoadInfo(**_known(LoadInfo, load))
    return LoadInfo(
        model_path=f"{url}/{remote.model}",
        model_desc=remote.model,
        architecture="?",
        n_params=0,
        model_size_bytes=0,
        n_layers=0,
        n_layers_offloaded=0,
        n_vocab=0,
        n_ctx_train=0,
        backend=f"remote {url}",
        load_time_s=0.0,
        n_ctx=0,
        n_batch=0,
        n_ubatch=0,
        n_threads=0,
        flash_attn=False,
        backend_sampling=False,
        type_k="?",
        type_v="?",
        chat_template="server",
        llama_cpp_python="?",
        n_gpu_layers=0,
    )


# --- small helpers -------------------------------------------------------------------------------


def normalize_url(url: str) -> str:
    """``http(s)://host:port`` without a trailing slash or ``/v1``; one clear line if bad."""
    text = url.strip()
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserInputError(f"not a worker URL: {url!r} (use http://HOST:PORT)")
    try:
        parts.port  # noqa: B018 - validates the port
    except ValueError:
        raise UserInputError(f"bad port in worker URL {url!r}") from None
    path = parts.path.rstrip("/")
    path = path[:-3] if path.endswith("/v1") else path
    return f"{parts.scheme}://{parts.netloc}{path}"


def _ssl_context(verify: bool | str) -> bool | ssl.SSLContext:
    if isinstance(verify, bool):
        return verify
    try:
        return ssl.create_default_context(cafile=verify)
    except (OSError, ssl.SSLError) as exc:
        raise UserInputError(f"cannot use {verify} to verify the worker's TLS: {exc}") from None


def _error_message(resp: Any) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text.strip()[:200] or f"HTTP {resp.status_code}"
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        return str(err.get("message", err))
    return str(err or body)[:200]


def _transport_message(url: str, exc: Exception) -> str:
    import httpx

    if isinstance(exc, httpx.ConnectError):
        reason = str(exc) or "connection refused"
        if "CERTIFICATE_VERIFY_FAILED" in reason:
            return f"cannot verify the TLS certificate of worker {url} (pass the CA/cert file)"
        return f"cannot connect to worker {url}: {reason}"
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError):
        return f"worker {url} closed the connection mid-request (did it stop?)"
    return f"worker {url}: {type(exc).__name__}: {exc}"
