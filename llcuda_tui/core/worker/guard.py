"""Who may use a worker: without an API key only this machine (a loopback socket, loopback
Host headers), with one whoever sends it (every endpoint but the open ones, /health).

:func:`check_exposure` refuses a keyless worker on a socket bound off loopback;
:class:`Guard` is the ASGI middleware that checks the key (in constant time) and the Host
header, and counts every request in the metrics.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import socket
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from llcuda_tui.core.errors import UserInputError
from llcuda_tui.core.worker import protocol as P

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from llcuda_tui.core.worker.state import WorkerConfig, WorkerState


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


class Guard:
    """ASGI middleware: the API key on every path but ``open_paths``, and request counting (by
    path for ``known_paths``, as 'other' for any other path, so labels do not grow with what
    clients probe). A worker without a key (so on loopback) also refuses requests whose Host
    header is not a loopback name or address: a web page whose name was re-pointed at
    127.0.0.1 (DNS rebinding) would otherwise read the worker's answers in the user's
    browser."""

    def __init__(
        self,
        app: ASGIApp,
        state: WorkerState,
        known_paths: Iterable[str],
        open_paths: Iterable[str],
    ) -> None:
        self.app = app
        self.state = state
        self.known_paths = frozenset(known_paths)
        self.open_paths = frozenset(open_paths)
        key = state.config.api_key
        self._key = key.encode() if key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        label = path if path in self.known_paths else "other"
        status = {"code": 0}

        async def counting_send(message: Message) -> None:
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
            needs_key = self._key is not None and path not in self.open_paths
            if needs_key and not self._authorized(scope):
                await _send_json(
                    send,
                    401,
                    P.error_body("missing or wrong API key", 401, code="invalid_api_key"),
                    [(b"www-authenticate", b"Bearer")],
                )
                status["code"] = 401
                return
            await self.app(scope, receive, counting_send)
        finally:
            self.state.metrics.requests.labels(label, str(status["code"] or 499)).inc()

    def _authorized(self, scope: Scope) -> bool:
        assert self._key is not None
        given = b""
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                # the scheme is case-insensitive (RFC 7235): "bearer KEY" is as good
                scheme, _, token = value.strip().partition(b" ")
                if scheme.lower() == b"bearer":
                    given = token.strip()
                break
        return hmac.compare_digest(given, self._key)


def _loopback_host(scope: Scope) -> bool:
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


async def _send_json(
    send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] | None = None
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
