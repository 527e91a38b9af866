"""The worker's HTTP API on real uvicorn servers on 127.0.0.1 (CPU): OpenAI shapes and the
official client, the same greedy text as in-process, auth, TLS, limits, errors, metrics,
extensions, disconnects and draining."""

from __future__ import annotations

import datetime
import json
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from llcuda_tui.core.config import Settings
from llcuda_tui.core.engine import Engine, EngineConfig, GenerationRequest, SamplingParams
from llcuda_tui.core.errors import UserInputError
from llcuda_tui.core.worker import (
    ENDPOINTS,
    BatchEngine,
    Listen,
    RemoteEngine,
    WorkerConfig,
    WorkerError,
    WorkerServer,
)
from tests.core.worker.conftest import API_KEY, auth

GREEDY = SamplingParams(temperature=0.0)
CHAT = [{"role": "user", "content": "Say hello."}]
pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def smollm_engine(smollm_path: Path, cpu_threads: int) -> Iterator[Engine]:
    with Engine.load(EngineConfig(smollm_path, n_ctx=1024, n_threads=cpu_threads)) as eng:
        yield eng


def _sse(resp: httpx.Response) -> list[dict]:
    events = []
    for line in resp.iter_lines():
        if line.startswith("data: ") and line != "data: [DONE]":
            events.append(json.loads(line[6:]))
    return events


# --- the same text as in-process, through the official client and ours ------------------------


def test_openai_client_streams_the_in_process_greedy_chat(
    smollm_worker: WorkerServer, smollm_engine: Engine
) -> None:
    import openai

    expected, rec = smollm_engine.generate(
        GenerationRequest(messages=CHAT, max_tokens=40, sampling=GREEDY)
    )
    client = openai.OpenAI(base_url=f"{smollm_worker.url}/v1", api_key="unused", max_retries=0)
    stream = client.chat.completions.create(
        model="smollm",
        messages=CHAT,
        max_tokens=40,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, finish, usage = [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
    assert "".join(pieces) == expected
    assert finish == "stop" and rec.stop_reason == "eos"
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (
        rec.prompt_tokens,
        rec.generated_tokens,
    )
    whole = client.chat.completions.create(
        model="smollm", messages=CHAT, max_tokens=40, temperature=0
    )
    assert whole.choices[0].message.content == expected
    assert whole.usage is not None and whole.usage.completion_tokens == rec.generated_tokens


def test_our_client_streams_the_in_process_greedy_text(
    smollm_worker: WorkerServer, smollm_engine: Engine
) -> None:
    from llcuda_tui import InferenceClient

    req = GenerationRequest(prompt="The capital of France is", max_tokens=24, sampling=GREEDY)
    expected, rec = smollm_engine.generate(req)
    with RemoteEngine.connect(smollm_worker.url) as remote:
        assert remote.remote.kind == "llcuda" and remote.remote.parallel == 2
        assert remote.info.architecture == smollm_engine.info.architecture
        chunks = list(remote.stream(req))
        assert "".join(c.text for c in chunks) == expected
        last = chunks[-1].record
        assert last is not None and all(c.record is None for c in chunks[:-1])
        assert (last.generated_tokens, last.stop_reason) == (rec.generated_tokens, "length")
        assert len(last.token_times_s) == rec.generated_tokens
        assert last.ttft_s > 0 and last.total_s >= last.ttft_s
        chat_text, _ = remote.generate(
            GenerationRequest(messages=CHAT, max_tokens=40, sampling=GREEDY)
        )
        assert (
            chat_text
            == smollm_engine.generate(
                GenerationRequest(messages=CHAT, max_tokens=40, sampling=GREEDY)
            )[0]
        )
    with InferenceClient(smollm_worker.url) as client:
        r = client.infer("The capital of France is", max_tokens=24, temperature=0)
        assert (r.text, r.tokens, r.finish_reason) == (expected, 24, "length")
        assert r.latency_ms >= r.ttft_ms > 0 and r.prompt_tokens == rec.prompt_tokens
        assert (
            "".join(client.stream("The capital of France is", max_tokens=24, temperature=0))
            == expected
        )
        assert client.last_result is not None and client.last_result.tokens == 24
        assert client.models()[0] == "smollm"
        assert client.health() == "ok"


def test_disconnect_frees_the_slot_at_once(smollm_worker: WorkerServer) -> None:
    body = {"prompt": "Once upon a time", "max_tokens": 500, "ignore_eos": True, "stream": True}
    with httpx.Client(base_url=smollm_worker.url, timeout=10) as http:
        with http.stream("POST", "/v1/completions", json=body) as resp:
            lines = resp.iter_lines()
            assert sum(1 for _, line in zip(range(6), lines, strict=False) if line) >= 2
        t_closed = time.monotonic()
        while time.monotonic() - t_closed < 2:
            stats = http.get("/llcuda/v1/info").json()["stats"]
            if stats["active"] == 0:
                break
            time.sleep(0.01)
        assert stats["active"] == 0 and stats["kv_cells_used"] == 0
        assert time.monotonic() - t_closed < 1.0
        time.sleep(0.05)
        last = http.get("/llcuda/v1/runs", params={"limit": 1}).json()["runs"][0]["record"]
        assert last["stop_reason"] == "cancelled" and last["generated_tokens"] < 100


def test_non_streamed_request_cancelled_when_client_leaves(smollm_worker: WorkerServer) -> None:
    body = {"prompt": "Once upon a time", "max_tokens": 500, "ignore_eos": True}
    with (
        httpx.Client(base_url=smollm_worker.url, timeout=0.5) as http,
        pytest.raises(httpx.ReadTimeout),
    ):
        http.post("/v1/completions", json=body)
    with httpx.Client(base_url=smollm_worker.url, timeout=5) as http:
        deadline = time.monotonic() + 2
        while http.get("/llcuda/v1/info").json()["stats"]["active"] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert http.get("/llcuda/v1/info").json()["stats"]["active"] == 0


# --- auth, TLS ---------------------------------------------------------------------------------


def test_api_key_is_required_and_checked(tiny_worker: WorkerServer) -> None:
    body = {"prompt": "hello", "max_tokens": 2}
    with httpx.Client(base_url=tiny_worker.url, timeout=5) as http:
        assert http.get("/health").status_code == 200  # the one open endpoint
        for headers in (
            {},
            {"authorization": "Bearer wrong"},
            {"authorization": f"Bearer {API_KEY[:-1]}X"},
            {"authorization": API_KEY},
        ):
            for method, path in (
                ("POST", "/v1/completions"),
                ("GET", "/v1/models"),
                ("GET", "/metrics"),
                ("GET", "/llcuda/v1/runs"),
            ):
                resp = http.request(method, path, json=body, headers=headers)
                assert resp.status_code == 401, (headers, path)
                assert resp.json()["error"]["type"] == "authentication_error"
        for e in ENDPOINTS:  # every route of the table: only the open ones answer without it
            resp = http.request(e.method, e.path, json=body)
            if e.needs_key:
                assert resp.status_code == 401, e.path
            else:
                assert resp.status_code == 200, e.path
        ok = http.post("/v1/completions", json=body, headers=auth())
        assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 2
    with pytest.raises(UserInputError, match="API key"):
        RemoteEngine.connect(tiny_worker.url, "wrong-key-123")
    import openai

    client = openai.OpenAI(base_url=f"{tiny_worker.url}/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.models.list()


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_tls_with_a_self_signed_certificate(tiny_gguf: Path, tmp_path: Path) -> None:
    import openai

    cert, key = _self_signed(tmp_path)
    cfg = WorkerConfig(
        EngineConfig(tiny_gguf, n_ctx=256, n_threads=1), "tiny", parallel=1, api_key=API_KEY
    )
    listen = Listen(port=0, tls_cert=str(cert), tls_key=str(key))
    with WorkerServer(cfg, listen) as worker:
        assert worker.url.startswith("https://127.0.0.1:")
        with RemoteEngine.connect(worker.url, API_KEY, verify=str(cert)) as remote:
            _, rec = remote.generate(GenerationRequest(prompt="hello", max_tokens=5))
            assert rec.generated_tokens == 5
        with pytest.raises(WorkerError, match=r"TLS|certificate"):
            RemoteEngine.connect(worker.url, API_KEY)  # not trusted by default
        http = httpx.Client(verify=_trusting(cert))
        client = openai.OpenAI(base_url=f"{worker.url}/v1", api_key=API_KEY, http_client=http)
        out = client.completions.create(model="tiny", prompt="hello", max_tokens=3)
        assert out.usage is not None and out.usage.completion_tokens == 3
        with pytest.raises(httpx.HTTPError):  # plain HTTP to a TLS port
            httpx.get(worker.url.replace("https", "http") + "/health", timeout=2)


def _trusting(cert: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert))


# --- limits and malformed input ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"[1, 2]", 400, "JSON object"),
        (b"\xff\xfe", 400, "not valid JSON"),
        (json.dumps({"prompt": "hi", "max_tokens": 10**9}).encode(), 400, "max_tokens"),
        (json.dumps({"prompt": "hi", "max_tokens": -1}).encode(), 400, "max_tokens"),
        (json.dumps({"prompt": "hi", "temperature": "hot"}).encode(), 400, "temperature"),
        (json.dumps({"prompt": "hi", "temperature": -1}).encode(), 400, "temperature"),
        (json.dumps({"prompt": "hi", "n": 9}).encode(), 400, "[1, 8]"),
        (json.dumps({"prompt": "hi", "stop": [""]}).encode(), 400, "stop"),
        (json.dumps({"prompt": "hi", "stream": "yes"}).encode(), 400, "stream"),
        (json.dumps({"prompt": "hi", "logit_bias": {"x": 1}}).encode(), 400, "logit_bias"),
        (json.dumps({"prompt": "hi", "logit_bias": {"99999": 1}}).encode(), 400, "vocabulary"),
        (json.dumps({"prompt": 42}).encode(), 400, "prompt"),
        (json.dumps({"prompt": [999999]}).encode(), 400, "vocabulary"),
        (json.dumps({"prompt": "w " * 3000}).encode(), 400, "tokens"),
    ],
)
def test_malformed_requests_get_a_4xx_json_error(
    tiny_worker: WorkerServer, body: bytes, status: int, fragment: str
) -> None:
    with httpx.Client(base_url=tiny_worker.url, headers=auth(), timeout=5) as http:
        resp = http.post(
            "/v1/completions", content=body, headers={"content-type": "application/json"}
        )
        assert resp.status_code == status
        assert fragment in resp.json()["error"]["message"]
        assert http.get("/health").json() == {"status": "ok"}


@pytest.mark.parametrize(
    "body",
    [
        {"messages": []},
        {"messages": "hi"},
        {"messages": [{"role": "wizard", "content": "hi"}]},
        {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
        {"messages": [{"role": "user", "content": 5}]},
        {"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]},
    ],
)
def test_malformed_chat_requests_get_a_400(tiny_worker: WorkerServer, body: dict) -> None:
    resp = httpx.post(f"{tiny_worker.url}/v1/chat/completions", json=body, headers=auth())
    assert resp.status_code == 400 and resp.json()["error"]["param"] in ("messages", "tools")


def test_oversize_body_is_413_and_the_server_stays_up(tiny_gguf: Path) -> None:
    cfg = WorkerConfig(
        EngineConfig(tiny_gguf, n_ctx=256, n_threads=1), "tiny", parallel=1, max_body_bytes=4096
    )
    with WorkerServer(cfg) as worker:
        big = json.dumps({"prompt": "x" * 100_000, "max_tokens": 1})
        resp = httpx.post(f"{worker.url}/v1/completions", content=big, timeout=5)
        assert resp.status_code == 413 and "larger than 4096" in resp.json()["error"]["message"]

        def chunked() -> Iterator[bytes]:  # no Content-Length
            for _ in range(20):
                yield b"x" * 1000

        resp = httpx.post(f"{worker.url}/v1/completions", content=chunked(), timeout=5)
        assert resp.status_code == 413
        ok = httpx.post(f"{worker.url}/v1/completions", json={"prompt": "hi", "max_tokens": 1})
        assert ok.status_code == 200


def test_the_docs_list_every_endpoint() -> None:
    """docs/worker.md's API table names each route of the one table the server is built from."""
    docs = (Path(__file__).parents[3] / "docs" / "worker.md").read_text(encoding="utf-8")
    missing = [f"{e.method} {e.path}" for e in ENDPOINTS if f"`{e.method} {e.path}" not in docs]
    assert not missing
    assert [e.path for e in ENDPOINTS if not e.needs_key] == ["/health"]


def test_unknown_paths_and_methods_are_json_errors(tiny_worker: WorkerServer) -> None:
    with httpx.Client(base_url=tiny_worker.url, headers=auth(), timeout=5) as http:
        nf = http.get("/v2/nothing")
        assert nf.status_code == 404 and nf.json()["error"]["code"] == "unknown_url"
        bad = http.get("/v1/completions")
        assert bad.status_code == 405 and bad.json()["error"]["code"] == "method_not_allowed"


# --- health while loading, metrics and extensions ----------------------------------------------


def test_health_is_503_while_loading(tiny_gguf: Path) -> None:
    go = threading.Event()
    cfg = WorkerConfig(EngineConfig(tiny_gguf, n_ctx=256, n_threads=1), "tiny", parallel=1)

    def slow_load() -> BatchEngine:
        go.wait(10)
        return BatchEngine.load(cfg.engine, 1)

    worker = WorkerServer(cfg, loader=slow_load).start(wait_loaded=False)
    try:
        health = httpx.get(f"{worker.url}/health", timeout=2)
        assert health.status_code == 503 and health.json()["status"] == "loading"
        busy = httpx.post(f"{worker.url}/v1/completions", json={"prompt": "hi"}, timeout=2)
        assert busy.status_code == 503 and "loading" in busy.json()["error"]["message"]
        with RemoteEngine.connect(worker.url) as remote:
            assert remote.remote.status == "loading"
        go.set()
        with RemoteEngine.connect(worker.url, wait_loaded_s=10) as remote:
            assert remote.remote.status == "ready"
        assert httpx.get(f"{worker.url}/health", timeout=2).status_code == 200
    finally:
        go.set()
        worker.stop()


def test_a_failed_load_is_reported(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + b"\0" * 64)
    cfg = WorkerConfig(EngineConfig(bad, n_ctx=256, n_threads=1), "bad", parallel=1)
    worker = WorkerServer(cfg).start(wait_loaded=False)
    try:
        assert worker.state.loaded.wait(10)
        health = httpx.get(f"{worker.url}/health", timeout=2)
        assert health.status_code == 503 and "cannot load" in health.json()["error"]
    finally:
        worker.stop()


def test_metrics_count_requests_tokens_and_latency(tiny_worker: WorkerServer) -> None:
    with RemoteEngine.connect(tiny_worker.url, API_KEY) as remote:
        for _ in range(3):
            remote.generate(GenerationRequest(prompt="hello", max_tokens=5, sampling=GREEDY))
    text = httpx.get(f"{tiny_worker.url}/metrics", headers=auth()).text
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    assert values['llcuda_requests_total{path="/v1/completions",status="200"}'] >= 3
    assert values["llcuda_generated_tokens_total"] >= 15
    assert values["llcuda_time_to_first_token_seconds_count"] >= 3
    assert values["llcuda_inter_token_latency_seconds_count"] >= 12
    assert values["llcuda_slots"] == 4
    assert values["llcuda_kv_cells_total"] >= 4 * 1024
    for gauge in (
        "llcuda_queue_depth",
        "llcuda_active_sequences",
        "llcuda_kv_cells_used",
        "llcuda_kv_cache_usage_ratio",
        "llcuda_model_ready",
    ):
        assert gauge in values


def test_extensions_gpu_models_runs_info(tiny_worker: WorkerServer, settings: Settings) -> None:
    with RemoteEngine.connect(tiny_worker.url, API_KEY) as remote:
        remote.generate(GenerationRequest(prompt="the cat", max_tokens=3, sampling=GREEDY))
        gpu = remote.gpu(history=5)
        assert gpu.sample.state in ("ok", "unavailable", "error")
        if gpu.sample.ok:
            assert set(gpu.history) == {g.index for g in gpu.sample.gpus}
        models = remote.models()
        assert models[0]["id"] == "tiny" and models[0]["loaded"] is True
        assert models[0]["load"]["n_ctx"] == 1024
        runs = remote.runs(limit=1)
        assert runs[0]["record"].generated_tokens == 3 and runs[0]["endpoint"] == "completions"
        assert remote.tokenize("hello world") == remote.tokenize("hello world", add_special=True)
        assert remote.count_tokens(GenerationRequest(prompt="hello world")) >= 2
        info = httpx.get(f"{tiny_worker.url}/llcuda/v1/info", headers=auth()).json()
        assert info["status"] == "ready" and info["limits"]["max_tokens"] == 1024
        assert info["load"]["backend"] == "CPU"


def test_store_listing_comes_from_the_workers_store(tiny_gguf: Path, settings: Settings) -> None:
    cfg = WorkerConfig(
        EngineConfig(tiny_gguf, n_ctx=256, n_threads=1), "tiny", parallel=1, paths=settings.paths
    )
    with WorkerServer(cfg) as worker:
        body = httpx.get(f"{worker.url}/llcuda/v1/models").json()
        assert body["loaded"]["id"] == "tiny"
        assert isinstance(body["store"], list)


# --- draining (what SIGTERM does) --------------------------------------------------------------


def test_drain_finishes_short_streams_and_cancels_long_ones(tiny_gguf: Path) -> None:
    cfg = WorkerConfig(
        EngineConfig(tiny_gguf, n_ctx=16384, n_threads=1, ctx_beyond_training=True),
        "tiny",
        parallel=2,
        shutdown_grace_s=1.5,
    )
    worker = WorkerServer(cfg).start()
    results: dict[str, object] = {}
    started = threading.Barrier(3)

    def run(name: str, n: int) -> None:
        with RemoteEngine.connect(worker.url) as remote:
            req = GenerationRequest(prompt="hello", max_tokens=n, ignore_eos=True, sampling=GREEDY)
            stream = remote.stream(req)
            first = next(stream)
            started.wait(5)
            results[name] = [first, *stream][-1].record

    threads = [
        threading.Thread(target=run, args=("short", 300)),
        threading.Thread(target=run, args=("long", 16000)),
    ]
    for t in threads:
        t.start()
    started.wait(5)
    worker.drain()
    time.sleep(0.3)
    with pytest.raises(httpx.ConnectError):  # no new connections while draining
        httpx.get(f"{worker.url}/health", timeout=2)
    for t in threads:
        t.join(10)
    worker.stop()
    short, long = results["short"], results["long"]
    assert short.stop_reason == "length" and short.generated_tokens == 300  # type: ignore[attr-defined]
    assert long.stop_reason == "cancelled" and long.generated_tokens < 16000  # type: ignore[attr-defined]
