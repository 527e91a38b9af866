"""The worker's security properties (docs/reliability.md, its security review): loopback by
default, a key off loopback, a constant-time key check, the key never shown, bounded requests,
no request field that reaches the file system, and chat templates from downloaded files that
cannot run code. Real servers on 127.0.0.1 (and 0.0.0.0), real files."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest

from llcuda_tui.cli import build_parser, main
from llcuda_tui.core.errors import UserInputError
from llcuda_tui.core.worker import Guard, Listen, WorkerServer, WorkerState, is_loopback
from llcuda_tui.core.worker import protocol as P
from tests.core.worker.conftest import API_KEY, auth, tiny_config
from tests.gguf_factory import write_tiny_llama

pytestmark = pytest.mark.timeout(60)
SECRET = "s3cret-soak-KEY-4c1d9e7f0a"
CHAT = [{"role": "user", "content": "hello"}]


def _keyed_args(model: Path, key: Path) -> list[str]:
    """`llcuda serve` arguments: the tiny model, one small slot, the key in ``key``."""
    return ["-m", str(model), "--api-key-file", str(key), "--ctx", "256", "--parallel", "1",
            "--threads", "1"]  # fmt: skip


def _key_file(tmp_path: Path, mode: int = 0o600) -> Path:
    path = tmp_path / "api.key"
    path.write_text(SECRET + "\n")
    path.chmod(mode)
    return path


# --- where it listens --------------------------------------------------------------------------


def test_the_default_bind_is_loopback(tiny_gguf: Path) -> None:
    args = build_parser().parse_args(["serve", "-m", "x"])
    assert args.host == "127.0.0.1" and Listen().host == "127.0.0.1"
    with WorkerServer(tiny_config(tiny_gguf, n_ctx=256, api_key=None)) as worker:
        assert worker.url.startswith("http://127.0.0.1:")


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("::ffff:127.0.0.1", True),
        ("0.0.0.0", False),
        ("0", False),
        ("::", False),
        ("::ffff:0.0.0.0", False),
        ("192.0.2.1", False),
        ("", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize("host", ["0", "::", "::ffff:0.0.0.0"])
def test_the_cli_refuses_other_spellings_of_any_address_without_a_key(
    tiny_gguf: Path, capsys: pytest.CaptureFixture[str], host: str
) -> None:
    assert main(["serve", "-m", str(tiny_gguf), "--host", host]) == 2
    assert "without --api-key-file" in capsys.readouterr().err


def test_the_library_refuses_to_serve_off_loopback_without_a_key(tiny_gguf: Path) -> None:
    open_cfg = tiny_config(tiny_gguf, n_ctx=256, api_key=None)
    with pytest.raises(
        UserInputError, match=r"refusing to listen on 0\.0\.0\.0 without an API key"
    ):
        WorkerServer(open_cfg, Listen(host="0.0.0.0", port=0))
    with WorkerServer(tiny_config(tiny_gguf, n_ctx=256), Listen(host="0.0.0.0", port=0)) as w:
        local = w.url.replace("0.0.0.0", "127.0.0.1")
        assert httpx.get(f"{local}/v1/models", timeout=5).status_code == 401
        assert httpx.get(f"{local}/v1/models", headers=auth(), timeout=5).status_code == 200


def test_an_unresolvable_host_is_one_line(
    tiny_gguf: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = str(_key_file(tmp_path))
    args = ["serve", "-m", str(tiny_gguf), "--api-key-file", key, "--port", "0"]
    assert main([*args, "--host", "no-such-host.invalid"]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == "llcuda: error: cannot resolve no-such-host.invalid"
    assert "Traceback" not in err


def test_a_keyless_worker_answers_only_loopback_host_names(
    tiny_gguf: Path, tiny_worker: WorkerServer
) -> None:
    """DNS rebinding: a page at evil.example re-pointed at 127.0.0.1 sends Host: evil.example."""
    port = tiny_worker.url.rsplit(":", 1)[1]
    with WorkerServer(tiny_config(tiny_gguf, n_ctx=256, api_key=None, parallel=1)) as open_w:
        for host, status in [
            ("evil.example", 403),
            (f"evil.example:{port}", 403),
            ("127.0.0.1.nip.io", 403),
            (f"localhost:{port}", 200),
            ("LOCALHOST.", 200),
            ("api.localhost", 200),
            (f"127.0.0.1:{port}", 200),
            (f"[::1]:{port}", 200),
        ]:
            resp = httpx.get(f"{open_w.url}/v1/models", headers={"host": host}, timeout=5)
            assert resp.status_code == status, host
            assert httpx.get(f"{open_w.url}/health", headers={"host": host}).status_code == status
        evil = {"host": "evil.example", "authorization": f"Bearer {API_KEY}"}
        assert httpx.get(f"{tiny_worker.url}/v1/models", headers=evil).status_code == 200


# --- the key -----------------------------------------------------------------------------------


def test_the_key_comparison_takes_as_long_wherever_the_key_differs(tiny_gguf: Path) -> None:
    """A short-circuiting comparison (==) is ~1000x faster when the first byte differs than
    when the last one does, for a 1 MiB key; hmac.compare_digest is not."""
    key = "k" * 2**20
    guard = Guard(None, WorkerState(tiny_config(tiny_gguf, api_key=key)), (), ())

    def best_of(given: str) -> float:
        scope = {"headers": [(b"authorization", f"Bearer {given}".encode())]}
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(40):
                assert not guard._authorized(scope)
            best = min(best, time.perf_counter() - t0)
        return best

    first, last = best_of("x" + key[1:]), best_of(key[:-1] + "x")
    assert 0.5 < last / first < 2.0, (first, last)
    assert guard._authorized({"headers": [(b"authorization", f"Bearer {key}".encode())]})


def test_the_key_never_leaves_the_worker(
    tiny_gguf: Path, tmp_path: Path, llcuda_home: Path, worker_process: type
) -> None:
    """Right and wrong keys on every endpoint, errors included, with debug logging: the key is
    in no response, no log line, no file the worker wrote, and no repr of its config."""
    w = worker_process.start(*_keyed_args(tiny_gguf, _key_file(tmp_path)), "--log-level", "debug")
    good = {"authorization": f"Bearer {SECRET}"}
    wrong = [{"authorization": f"Bearer {SECRET[:-1]}"}, {"authorization": SECRET}, {}]
    seen: list[str] = []
    with httpx.Client(base_url=w.url, timeout=10) as http:
        for headers in [good, *wrong]:
            for path in ("/health", "/v1/models", "/metrics", "/nothing", *_EXT_GETS):
                resp = http.get(path, headers=headers)
                seen.append(f"{resp.headers}\n{resp.text}")
            for path, body in _POSTS:
                resp = http.post(path, json=body, headers=headers)
                seen.append(f"{resp.headers}\n{resp.text}")
                assert (
                    resp.status_code == (400 if "bad" in body else 200) if headers is good else 401
                )
            with http.stream("POST", "/v1/completions", headers=headers, json=_STREAM) as resp:
                seen.append(resp.read().decode())
        assert http.get("/metrics", headers=good).status_code == 200
    w.signal(signal.SIGTERM)
    assert w.proc.wait(20) == 0
    out = (w.proc.stdout.read() if w.proc.stdout else "") + (
        w.proc.stderr.read() if w.proc.stderr else ""
    )
    assert '"GET /v1/models HTTP/1.1" 401' in out  # the access log was on
    assert SECRET not in out
    assert not [s for s in seen if SECRET in s]
    written = [p for p in llcuda_home.rglob("*") if p.is_file()]
    assert not [p for p in written if SECRET.encode() in p.read_bytes()]
    assert SECRET not in repr(tiny_config(tiny_gguf, api_key=SECRET))


_EXT_GETS = ("/llcuda/v1/info", "/llcuda/v1/models", "/llcuda/v1/runs", "/llcuda/v1/gpu")
_STREAM = {"prompt": "hello", "max_tokens": 3, "stream": True}
_POSTS = (
    ("/v1/completions", {"prompt": "hello", "max_tokens": 3}),
    ("/v1/chat/completions", {"messages": CHAT, "max_tokens": 3}),
    ("/llcuda/v1/tokenize", {"content": "hello"}),
    ("/v1/completions", {"prompt": "hello", "max_tokens": 10**9, "bad": 1}),
)


def test_a_key_that_would_travel_in_clear_or_is_readable_is_warned_about(
    tiny_gguf: Path, tmp_path: Path, worker_process: type
) -> None:
    key = _key_file(tmp_path, mode=0o644)
    w = worker_process.start(*_keyed_args(tiny_gguf, key), "--host", "0.0.0.0")
    w.kill()
    err = w.proc.stderr.read() if w.proc.stderr else ""
    assert "warning: without --tls-cert the API key crosses the network to 0.0.0.0" in err
    assert f"warning: --api-key-file {key} can be read by other users" in err
    assert SECRET not in err


# --- request limits ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"stop": ["s"] * (P.MAX_STOP_STRINGS + 1)}, "stop"),
        ({"stop": "s" * (P.MAX_STOP_CHARS + 1)}, "stop"),
        ({"stop": [1]}, "stop"),
        ({"messages": CHAT * (P.MAX_MESSAGES + 1)}, "messages"),
        ({"n": 0}, "n"),
        ({"n": P.MAX_N + 1}, "n"),
        ({"max_tokens": 1025}, "max_tokens"),
        ({"max_completion_tokens": 0}, "max_tokens"),
    ],
)
def test_requests_past_the_limits_are_refused(
    tiny_worker: WorkerServer, extra: dict, param: str
) -> None:
    body = {"messages": CHAT, "max_tokens": 2, **extra}
    resp = httpx.post(f"{tiny_worker.url}/v1/chat/completions", json=body, headers=auth())
    assert resp.status_code == 400 and resp.json()["error"]["param"] == param, resp.text


def test_metric_labels_do_not_grow_with_unknown_paths(tiny_worker: WorkerServer) -> None:
    with httpx.Client(base_url=tiny_worker.url, headers=auth(), timeout=5) as http:
        for i in range(20):
            http.get(f"/probe-{i}-{os.getpid()}")
        text = http.get("/metrics").text
    assert "probe-" not in text and 'path="other",status="404"' in text


# --- nothing in a request reaches the file system ----------------------------------------------


def test_request_fields_never_open_files(tiny_worker: WorkerServer, tmp_path: Path) -> None:
    """A FIFO blocks whoever opens it for reading until a writer comes: a worker that opened
    the path named in a request would hang here instead of answering."""
    fifo = tmp_path / "trap.gguf"
    os.mkfifo(fifo)
    names = [str(fifo), "../../../../etc/passwd", "/etc/passwd", "smollm2-135m-instruct"]
    with httpx.Client(base_url=tiny_worker.url, headers=auth(), timeout=5) as http:
        for name in names:
            chat = http.post(
                "/v1/chat/completions", json={"model": name, "messages": CHAT, "max_tokens": 2}
            )
            assert chat.status_code == 200 and chat.json()["model"] == "tiny"
            done = http.post(
                "/v1/completions", json={"model": name, "prompt": "a", "max_tokens": 2}
            )
            assert done.status_code == 200 and done.json()["model"] == "tiny"
            tok = http.post(
                "/llcuda/v1/tokenize", json={"content": "a", "model": name, "path": name}
            )
            assert tok.status_code == 200
            listing = http.get("/llcuda/v1/models", params={"model": name, "path": name})
            assert listing.json()["loaded"]["id"] == "tiny"
    for raw in (
        "/llcuda/v1/../../etc/passwd",
        "/llcuda/v1/%2e%2e/%2e%2e/etc/passwd",
        "//etc/passwd",
    ):
        assert _raw_get(tiny_worker.url, raw).startswith(b"HTTP/1.1 404"), raw


def _raw_get(url: str, target: str) -> bytes:
    """GET ``target`` exactly as written (httpx would normalise the dot segments)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(
            f"GET {target} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {API_KEY}\r\n"
            "connection: close\r\n\r\n".encode()
        )
        return s.recv(200)


# --- chat templates from downloaded files ------------------------------------------------------


def test_a_gguf_chat_template_cannot_run_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    escape = (
        "{{ cycler.__init__.__globals__.os.system('touch " + str(marker) + "') }}"
        "{{ ''.__class__.__mro__[1].__subclasses__() }}"
    )
    model = write_tiny_llama(tmp_path / "evil.gguf", chat_template=escape)
    with WorkerServer(tiny_config(model, n_ctx=256, api_key=None, parallel=1)) as worker:
        resp = httpx.post(
            f"{worker.url}/v1/chat/completions",
            json={"messages": CHAT, "max_tokens": 2},
            timeout=10,
        )
        assert resp.status_code == 400, resp.text
        assert "chat template" in resp.json()["error"]["message"]
        plain = httpx.post(f"{worker.url}/v1/completions", json={"prompt": "a", "max_tokens": 2})
        assert plain.status_code == 200
    assert not marker.exists()
    assert json.dumps(resp.json()).count("subclasses") == 0
