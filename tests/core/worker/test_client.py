"""The client side without a healthy worker: refused connections, bad URLs, and the wire-format
helpers (a silent or stalled worker: tests/faults/test_worker_faults.py)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from llcuda_tui.core.engine import GenerationRequest, RunRecord
from llcuda_tui.core.errors import UserInputError
from llcuda_tui.core.gpu import GpuProcess, GpuReading, GpuSample
from llcuda_tui.core.worker import WorkerServer
from llcuda_tui.core.worker import protocol as P
from llcuda_tui.core.worker.client import (
    RemoteEngine,
    WorkerError,
    WorkerGpuPoller,
    normalize_url,
    reading_from_dict,
    sample_from_dict,
)
from tests.core.worker.conftest import API_KEY

pytestmark = pytest.mark.timeout(30)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_nothing_listening_is_a_quick_clear_error() -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    t0 = time.monotonic()
    with pytest.raises(WorkerError, match="cannot connect to worker"):
        RemoteEngine.connect(url)
    assert time.monotonic() - t0 < 2.0
    from llcuda_tui import InferenceClient

    client = InferenceClient(url)
    assert client.health() == "unreachable"
    with pytest.raises(WorkerError, match="cannot connect"):
        client.infer("hello", max_tokens=2)


def test_urls_are_normalised_or_refused() -> None:
    assert normalize_url("127.0.0.1:8090") == "http://127.0.0.1:8090"
    assert normalize_url("http://host:8090/") == "http://host:8090"
    assert normalize_url("https://host:8090/v1") == "https://host:8090"
    for bad in ("ftp://host", "http://", "http://host:99999"):
        with pytest.raises(UserInputError):
            normalize_url(bad)


def test_request_payload_round_trips_through_the_parser() -> None:
    from llcuda_tui.core.config import SamplingDefaults
    from llcuda_tui.core.engine import SamplingParams

    sampling = SamplingParams(
        temperature=0.3,
        top_k=7,
        top_p=0.5,
        min_p=0.1,
        repeat_penalty=1.2,
        seed=9,
        logit_bias={5: -2.0},
    )
    limits = P.Limits(max_tokens=1000, default_max_tokens=100)
    for req in (
        GenerationRequest(prompt="hi", max_tokens=12, sampling=sampling, stop=("x",)),
        GenerationRequest(messages=[{"role": "user", "content": "hi"}], sampling=sampling),
        GenerationRequest(tokens=[1, 2, 3], max_tokens=3, ignore_eos=True, sampling=sampling),
    ):
        path, body = P.request_payload(req, "m")
        parse = P.parse_chat if path.endswith("chat/completions") else P.parse_completion
        parsed = parse(body, SamplingDefaults(), limits)
        assert parsed.request == req
        assert parsed.stream and parsed.include_usage


def test_stream_events_become_chunks_and_a_record() -> None:
    shaper = P.StreamShaper(chat=True, model="m", include_usage=True)
    record = RunRecord(
        prompt_tokens=4,
        generated_tokens=2,
        ttft_s=0.1,
        prefill_s=0.05,
        decode_s=0.01,
        prefill_tokens_per_s=80.0,
        decode_tokens_per_s=100.0,
        total_s=0.2,
        stop_reason="eos",
        prompt_tokens_evaluated=4,
        model_sha256=None,
        backend="CUDA0",
        n_gpu_layers=-1,
        n_ctx=512,
    )
    wire = shaper.opening() + P.HEARTBEAT + shaper.token("Hel") + shaper.token("")
    wire += shaper.closing("lo", record)
    lines = wire.decode().split("\n")
    from llcuda_tui.core.worker.client import _read_stream

    chunks = list(_read_stream(iter(lines), time.perf_counter(), threading.Event(), "u"))
    assert [c.text for c in chunks] == ["Hel", "", "lo"]
    got = chunks[-1].record
    assert got is not None and got.stop_reason == "eos" and got.generated_tokens == 2
    assert got.backend == "CUDA0" and len(got.token_times_s) == 2
    cut = (shaper.opening() + shaper.token("a")).decode().split("\n")
    with pytest.raises(WorkerError, match="ended the stream early"):
        list(_read_stream(iter(cut), time.perf_counter(), threading.Event(), "u"))


def test_gpu_samples_survive_the_wire() -> None:
    reading = GpuReading(
        index=0,
        name="H100",
        memory_used_bytes=5,
        clock_event_reasons=("idle",),
        processes=(GpuProcess(1, "x", 3, "compute", True),),
    )
    sample = GpuSample(1.0, 2.0, "ok", gpus=(reading,))
    back = sample_from_dict(sample.to_dict())
    assert back.gpus[0] == reading and back.state == "ok" and back.wall_time == 2.0
    assert reading_from_dict(reading.to_dict()).self_memory_bytes == 3


def test_gpu_poller_says_why_instead_of_raising(tiny_worker: WorkerServer) -> None:
    down = WorkerGpuPoller(f"http://127.0.0.1:{_free_port()}").poll()
    assert down.gpu is None and not down.reachable
    assert down.error is not None and "cannot connect to worker" in down.error
    refused = WorkerGpuPoller(tiny_worker.url, "wrong-key").poll()
    assert refused.gpu is None and "refused the API key" in str(refused.error)
    poller = WorkerGpuPoller(tiny_worker.url, API_KEY, history=5)
    first, second = poller.poll(), poller.poll()  # the second reuses the connection
    assert first.reachable and second.gpu is not None
    assert second.gpu.sample.state in ("ok", "unavailable", "error")
    poller.close()
    assert "no longer polling" in str(poller.poll().error)


def test_chat_tokens_are_counted_by_the_workers_template(
    tiny_worker: WorkerServer, tiny_gguf: Path
) -> None:
    """The TUI's context meter counts a chat through the worker: the same count as the
    model's own template in this process."""
    from llcuda_tui.core.engine import Engine, EngineConfig

    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}]
    request = GenerationRequest(messages=chat, max_tokens=1)
    with Engine.load(EngineConfig(tiny_gguf, n_ctx=256, n_threads=1)) as local:
        expected = local.count_tokens(request)
    with RemoteEngine.connect(tiny_worker.url, API_KEY) as remote:
        assert remote.count_tokens(request) == expected > 2
        with pytest.raises(UserInputError, match="'messages' must be a non-empty list"):
            remote._request("POST", f"{P.EXT_PREFIX}/tokenize", json={"messages": []})
