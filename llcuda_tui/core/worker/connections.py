"""Slow and greedy clients: the worker's HTTP/1.1 protocol (uvicorn's h11 one) with time limits
on reading a request and a cap on the connections one client address may hold.

uvicorn bounds only the idle time between two requests on a keep-alive connection
(``timeout_keep_alive``). A client that connected and sent nothing, sent a request head one
byte every few seconds (slowloris) or stopped half-way through a body held its connection, and
a file descriptor, for ever: a few hundred of them and the worker could not accept anyone.
:func:`protocol_class` gives uvicorn a protocol that

- closes a connection whose request head has not fully arrived ``header_timeout_s`` after the
  connection was made (or after the first byte of a next request on a keep-alive connection),
  with a 408;
- closes one whose body has not fully arrived ``body_timeout_s`` after its head, with a 408
  when no response has started (the handler sees a disconnect);
- answers a request on a connection beyond ``max_connections_per_client`` open ones from the
  same address with a 429 and closes it (the first ones are served as usual).

The deadlines are totals, not times between bytes: a client that trickles one byte a second
is as slow as one that sends nothing. Only *reading* a request is bounded: once it is read the
response (a stream of any length) is not timed, and between requests uvicorn's keep-alive
timeout (``idle_timeout_s``) applies. Each drop is counted in
``llcuda_dropped_connections_total{reason}``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Literal, cast

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from llcuda_tui.core.worker import protocol as P

if TYPE_CHECKING:
    from uvicorn._types import ASGI3Application
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    from llcuda_tui.core.worker.metrics import WorkerMetrics
    from llcuda_tui.core.worker.state import WorkerConfig, WorkerState

Phase = Literal["head", "body"]
"""What a connection's read timer bounds: the request head, or its body."""


def protocol_class(state: WorkerState) -> type[asyncio.Protocol]:
    """uvicorn's ``http`` protocol for the worker of ``state`` (``uvicorn.Config(http=...)``):
    one class per server, holding that server's per-address connection counts."""

    class WorkerProtocol(SlowClientProtocol):
        limits = state.config
        metrics = state.metrics
        open_by_address: ClassVar[dict[str, int]] = {}

    return WorkerProtocol


class SlowClientProtocol(H11Protocol):
    """H11Protocol with a read timer per connection and a per-address connection cap; the
    subclass made by :func:`protocol_class` supplies ``limits``, ``metrics`` and the shared
    counts. Everything runs on the event loop's thread, so the counts need no lock."""

    limits: ClassVar[WorkerConfig]
    metrics: ClassVar[WorkerMetrics]
    open_by_address: ClassVar[dict[str, int]]

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._read_timer: asyncio.TimerHandle | None = None
        self._timing: Phase | None = None
        self._counted_as: str | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        cap = self.limits.max_connections_per_client
        address = self.client[0] if self.client else None
        if cap > 0 and address is not None:
            held = self.open_by_address.get(address, 0)
            if held >= cap:
                # not counted: it is answered as soon as its head is in, then closed
                self.app = cast("ASGI3Application", _too_many_connections(address, cap))
                self._count_drop("connection_cap")
            else:
                self.open_by_address[address] = held + 1
                self._counted_as = address
        self._sync_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._set_timer(None)
        address, self._counted_as = self._counted_as, None
        if address is not None:
            left = self.open_by_address.get(address, 1) - 1
            if left > 0:
                self.open_by_address[address] = left
            else:
                self.open_by_address.pop(address, None)
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        self._sync_timer()

    def _sync_timer(self) -> None:
        """Time what the connection is reading now (h11's view of the client): the head while
        it waits for a request (from the connection, or from a next request's first byte),
        the body while one is coming; nothing while a response is written or between
        requests (uvicorn's keep-alive timer)."""
        if self.transport.is_closing() or self.transport.get_protocol() is not self:
            self._set_timer(None)  # closed, or handed to another protocol (an upgrade)
            return
        their_state = self.conn.their_state
        if their_state is h11.IDLE:
            started = self.cycle is None or bool(self.conn.trailing_data[0])
            self._set_timer("head" if started else None)
        elif their_state is h11.SEND_BODY:
            self._set_timer("body")
        else:
            self._set_timer(None)

    def _set_timer(self, phase: Phase | None) -> None:
        if phase == self._timing:
            return  # a deadline runs from the phase's start: more bytes do not extend it
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None
        self._timing = phase
        if phase is not None:
            limit = self.limits.header_timeout_s if phase == "head" else self.limits.body_timeout_s
            self._read_timer = self.loop.call_later(limit, self._timed_out, phase)

    def _timed_out(self, phase: Phase) -> None:
        self._read_timer = None
        self._timing = None
        if self.transport.is_closing():
            return
        if phase == "head":
            what, limit = "request head", self.limits.header_timeout_s
        else:
            what, limit = "request body", self.limits.body_timeout_s
        # a head times out between requests (nothing is being answered); a body may outlive
        # its response (a 401 or 413 sent before the body was read): then nothing more is sent
        answering = self.cycle is not None and self.cycle.response_started
        if phase == "head" or not answering:
            message = f"the {what} did not arrive within {limit:g} s"
            self.transport.write(
                _raw_response(408, P.error_body(message, 408, code="request_timeout"))
            )
        self._count_drop(f"{phase}_timeout")
        self.transport.close()  # a handler reading the body sees http.disconnect

    def _count_drop(self, reason: str) -> None:
        self.metrics.dropped_connections.labels(reason).inc()


def _too_many_connections(address: str, cap: int) -> Callable[..., Any]:
    """An ASGI app that answers 429 (and closes) for a connection over the per-address cap."""
    message = (
        f"too many connections from {address}: {cap} are open "
        "(the worker's --max-connections-per-client); close some or try again later"
    )
    data = json.dumps(P.error_body(message, 429, code="too_many_connections")).encode()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 429,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(data)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": data})

    return app


def _raw_response(status: int, body: dict[str, Any]) -> bytes:
    """A whole ``Connection: close`` response, written past h11 (whose state machine has no
    response to send before a request head has arrived)."""
    data = json.dumps(body).encode()
    reason = {408: "Request Timeout"}.get(status, "")
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(data)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + data
