"""The worker: an OpenAI-compatible HTTP API over a :class:`BatchEngine` (Starlette + uvicorn).

:func:`serve` runs one in the main thread until SIGTERM/SIGINT (``llcuda serve``);
:class:`WorkerServer` runs one on a background thread (tests, benchmarks, a TUI that serves its
own model). The rest of the worker, by concept: the endpoints, listed once (:mod:`.routes`),
their handlers (:mod:`.endpoints`, :mod:`.completions`), the API key and loopback checks
(:mod:`.guard`), what the handlers share (:mod:`.state`, :mod:`.bridge`, :mod:`.metrics`).

The model loads on a background thread after the socket is bound, so ``/health`` answers at
once. Requests are handed to the batch engine's thread; tokens come back through a per-request
buffer that the event loop drains, so concurrent requests share each ``llama_decode``. A client
that disconnects cancels its sequence (and frees its slot) within one step. On SIGTERM the worker
stops taking requests, lets in-flight ones run for ``shutdown_grace_s`` and then cancels the rest,
each stream ending with a proper last event.
"""

from __future__ import annotations

import contextlib
import logging
import math
import socket
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING

from llcuda_tui.core.errors import LlcudaError, UserInputError
from llcuda_tui.core.worker.guard import check_exposure
from llcuda_tui.core.worker.routes import create_app
from llcuda_tui.core.worker.state import ServedEngine, WorkerConfig, WorkerState

if TYPE_CHECKING:
    from starlette.types import ASGIApp


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
    """``http(s)://host:port`` of the bound ``sock`` (IPv6 hosts in brackets)."""
    host, port = sock.getsockname()[:2]
    scheme = "https" if listen.tls_cert else "http"
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}"


def _hide_query(record: logging.LogRecord) -> bool:
    """Access-log filter: a query string may carry a secret (``?api_key=...``, which clients
    send though only the header is accepted); log the path only."""
    args = record.args
    if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "?" in args[2]:
        record.args = (*args[:2], args[2].split("?", 1)[0] + "?…", *args[3:])
    return True


class UvicornServer:
    """uvicorn's Server with our SIGTERM handling: drain, then exit 0 (no re-raised signal)."""

    def __init__(self, app: ASGIApp, state: WorkerState, listen: Listen, main_thread: bool) -> None:
        import uvicorn

        from llcuda_tui.core.worker.connections import protocol_class

        config = uvicorn.Config(
            app,
            # h11 with read timeouts and a per-client connection cap (slow clients)
            http=protocol_class(state),
            # typed int, but only ever a call_later delay: a float works
            timeout_keep_alive=state.config.idle_timeout_s,  # type: ignore[arg-type]
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
        logging.getLogger("uvicorn.access").addFilter(_hide_query)  # added once (same object)

        class Server(uvicorn.Server):
            def handle_exit(self, sig: int, frame: FrameType | None) -> None:
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
                # SIGHUP (the terminal closed, a supervisor's "reload") drains like SIGTERM:
                # its default, exiting at once with rc 129, cut streams off with no final event
                sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
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

    def on_load_error(_exc: BaseException) -> None:
        uv.server.should_exit = True  # loading starts with the server, so uv is set by then

    state = WorkerState(config, on_load_error=on_load_error)
    uv = UvicornServer(create_app(state), state, listen, main_thread=True)
    uv.check_tls()
    run_until_stopped(uv, sock, state, base_url(listen, sock), on_ready)
    if state.error is not None:
        raise state.error
    return 0


def run_until_stopped(
    uv: UvicornServer,
    sock: socket.socket,
    state: WorkerState,
    url: str,
    on_ready: Callable[[str], None] | None,
) -> None:
    """Serve on ``sock`` in this thread until uvicorn stops (then close the socket), calling
    ``on_ready(url)`` from another thread once the model is loaded. The single worker and the
    MPI pool's rank 0 both run this."""
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


class WorkerServer:
    """A worker on a background thread, on 127.0.0.1 and a free port by default (tests,
    benchmarks, a TUI that serves its own model). ``with WorkerServer(cfg) as w: w.url``."""

    def __init__(
        self,
        config: WorkerConfig,
        listen: Listen | None = None,
        loader: Callable[[], ServedEngine] | None = None,
    ) -> None:
        self.listen = listen or Listen(port=0)
        self.state = WorkerState(config, loader=loader)
        self._uv = UvicornServer(create_app(self.state), self.state, self.listen, main_thread=False)
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
        self.state.cancel()
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
