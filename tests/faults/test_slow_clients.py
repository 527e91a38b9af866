"""Slow and greedy clients against a real ``llcuda serve`` on 127.0.0.1 (#23 item 20a).

A request head that trickles in (slowloris) or never comes, and a body that stalls, are closed
with a 408 once their deadline (small here: 1 s) has passed; a client address holding more
connections than ``--max-connections-per-client`` gets a 429 on the extra ones; and all the
while other clients are served. Only reading a request is timed: a stream that lasts longer
than every deadline completes. Bounds are generous (the CI box has 2 shared cores): a drop is
awaited for up to 10 s, never asserted to happen at an exact time."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from llcuda_tui import InferenceClient
from llcuda_tui.core.engine import GenerationRequest, SamplingParams
from llcuda_tui.core.errors import UserInputError
from llcuda_tui.core.worker import RemoteEngine
from tests.workerproc import WorkerProcess

FAST_DEADLINES = ["--header-timeout", "1", "--body-timeout", "1", "--idle-timeout", "1"]
DROP_WITHIN_S = 10.0
"""A dropped connection must be closed by then (the deadline is 1 s; the rest is load)."""


def _address(w: WorkerProcess) -> tuple[str, int]:
    parts = urlsplit(w.url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


def _connect(w: WorkerProcess) -> socket.socket:
    sock = socket.create_connection(_address(w), timeout=DROP_WITHIN_S)
    sock.settimeout(0.2)
    return sock


def _read_until_closed(sock: socket.socket, keep_sending: bytes = b"") -> tuple[bytes, float]:
    """What the worker sends until it closes ``sock`` and how long that took; meanwhile
    ``keep_sending`` goes out every 0.2 s (a client that trickles). Fails after 10 s."""
    t0 = time.monotonic()
    got = b""
    while time.monotonic() - t0 < DROP_WITHIN_S:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            if keep_sending:
                with contextlib.suppress(OSError):  # closed by the worker meanwhile
                    sock.sendall(keep_sending)
            continue
        except ConnectionResetError:
            return got, time.monotonic() - t0
        if not data:
            return got, time.monotonic() - t0
        got += data
    raise AssertionError(f"the worker kept the connection open for {DROP_WITHIN_S} s: {got!r}")


def _read_until(sock: socket.socket, end: bytes) -> bytes:
    """What the worker sends up to and with ``end`` (within 10 s)."""
    got = b""
    deadline = time.monotonic() + DROP_WITHIN_S
    while not got.endswith(end):
        assert time.monotonic() < deadline, got
        try:
            data = sock.recv(1)
        except TimeoutError:
            continue
        assert data, f"closed after {got!r}"
        got += data
    return got


def _error(response: bytes) -> tuple[int, dict[str, str]]:
    """Status and ``error`` object of a whole raw HTTP response."""
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)["error"]


def _served(w: WorkerProcess) -> None:
    """A normal client gets a whole generation."""
    with InferenceClient(w.url) as client:
        result = client.infer("hello", max_tokens=4, ignore_eos=True, temperature=0.0)
    assert result.record.generated_tokens == 4


def _dropped(w: WorkerProcess, reason: str) -> float:
    host, port = _address(w)
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    for line in text.splitlines():
        if line.startswith(f'llcuda_dropped_connections_total{{reason="{reason}"}}'):
            return float(line.split()[-1])
    return 0.0


@pytest.mark.timeout(60)
def test_a_request_head_that_trickles_or_never_comes_is_dropped(
    tiny_gguf: Path, worker_process: type
) -> None:
    w = worker_process.start("-m", str(tiny_gguf), "--ctx", "256", *FAST_DEADLINES)
    silent = _connect(w)  # connects, sends nothing
    loris = _connect(w)  # a header every 0.2 s: bytes keep coming, the head never ends
    loris.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    _served(w)  # meanwhile, on another connection
    got, took = _read_until_closed(loris, keep_sending=b"X-Slow: 1\r\n")
    assert took < DROP_WITHIN_S
    status, error = _error(got)
    assert status == 408 and error["message"] == "the request head did not arrive within 1 s"
    got, _ = _read_until_closed(silent)
    assert _error(got)[0] == 408
    # on a keep-alive connection, the next request's head is timed from its first byte
    again = _connect(w)
    again.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    _read_until(again, b'{"status":"ok"}')
    again.sendall(b"GET /health HTTP/1.1\r\n")
    got, _ = _read_until_closed(again, keep_sending=b"X-Slow: 1\r\n")
    assert _error(got)[0] == 408
    for sock in (silent, loris, again):
        sock.close()
    assert _dropped(w, "head_timeout") == 3
    _served(w)  # and after


@pytest.mark.timeout(60)
def test_a_body_that_stalls_is_dropped(tiny_gguf: Path, worker_process: type) -> None:
    w = worker_process.start("-m", str(tiny_gguf), "--ctx", "256", *FAST_DEADLINES)
    sock = _connect(w)
    body = json.dumps({"prompt": "hello", "max_tokens": 4}).encode()
    sock.sendall(
        b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body[:5]
    )
    _served(w)
    got, took = _read_until_closed(sock)
    sock.close()
    assert took < DROP_WITHIN_S
    status, error = _error(got)
    assert status == 408 and error["message"] == "the request body did not arrive within 1 s"
    assert _dropped(w, "body_timeout") == 1
    _served(w)
    w.kill()
    assert "Traceback" not in (w.proc.stderr.read() if w.proc.stderr else "")


@pytest.mark.timeout(60)
def test_connections_past_the_per_client_cap_get_a_429(
    tiny_gguf: Path, worker_process: type
) -> None:
    # deadlines long enough that the held connections stay open for the whole test
    w = worker_process.start(
        "-m", str(tiny_gguf), "--ctx", "256", "--max-connections-per-client", "3",
        "--header-timeout", "60", "--idle-timeout", "60",
    )  # fmt: skip
    host, port = _address(w)

    def health(conn: http.client.HTTPConnection) -> tuple[int, bytes]:
        conn.request("GET", "/health")
        response = conn.getresponse()
        return response.status, response.read()

    held = [http.client.HTTPConnection(host, port, timeout=10) for _ in range(3)]
    assert [health(c)[0] for c in held] == [200, 200, 200]  # three keep-alive connections
    extra = http.client.HTTPConnection(host, port, timeout=10)
    status, body = health(extra)
    assert status == 429
    message = json.loads(body)["error"]["message"]
    assert message.startswith("too many connections from 127.0.0.1: 3 are open")
    extra.close()
    with pytest.raises(UserInputError, match=r"too many connections from 127\.0\.0\.1") as err:
        RemoteEngine.connect(w.url)  # what our client's user sees: one line
    assert "\n" not in str(err.value)
    assert [health(c)[0] for c in held] == [200, 200, 200]  # the first ones still work
    held.pop().close()
    deadline = time.monotonic() + DROP_WITHIN_S
    while True:  # once the worker has seen the close, a new connection is let in
        again = http.client.HTTPConnection(host, port, timeout=10)
        status, _ = health(again)
        again.close()
        if status == 200:
            break
        assert status == 429 and time.monotonic() < deadline
        time.sleep(0.1)
    assert _dropped(w, "connection_cap") >= 2
    for conn in held:
        conn.close()


@pytest.mark.timeout(120)
def test_a_stream_longer_than_every_deadline_completes(
    smollm_path: Path, worker_process: type
) -> None:
    w = worker_process.start(
        "-m", str(smollm_path), "--ctx", "2048", "--threads", "1", "--parallel", "1",
        *FAST_DEADLINES,
    )  # fmt: skip

    def request(tokens: int) -> GenerationRequest:
        greedy = SamplingParams(temperature=0.0)
        prompt = "Once upon a time"
        return GenerationRequest(prompt, max_tokens=tokens, ignore_eos=True, sampling=greedy)

    with RemoteEngine.connect(w.url) as remote:
        # as many tokens as this machine decodes in about 4 s: the stream outlives the 1 s
        # deadlines however fast or loaded the machine is
        rate = remote.generate(request(32))[1].decode_tokens_per_s
        tokens = max(32, min(1900, int(rate * 4)))
        t0 = time.monotonic()
        chunks = list(remote.stream(request(tokens)))
        took = time.monotonic() - t0
    record = chunks[-1].record
    assert record is not None and record.generated_tokens == tokens
    assert record.stop_reason == "length"
    assert took > 2.0, f"the stream took {took:.2f} s: the test needs it longer than 2 s"
