"""Workers that die, stall or are told to stop while clients stream from them.

Killed (SIGKILL): the client errors within 2 s, keeps what it already received, and works
against another worker. Stalled (a peer that never answers; a worker stopped with SIGSTOP): the
client's read timeout turns silence into one clear error within about 2 s, and the worker is
usable again once it runs. SIGTERM: in-flight streams end with a record (short ones finish,
long ones are cancelled) and the worker exits 0."""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from llcuda_tui import InferenceClient
from llcuda_tui.core.engine import EngineConfig, GenerationRequest, SamplingParams
from llcuda_tui.core.worker import RemoteEngine, WorkerConfig, WorkerError, WorkerServer
from tests.workerproc import WorkerProcess

GREEDY = SamplingParams(temperature=0.0)
LONG = GenerationRequest(
    prompt="Once upon a time", max_tokens=800, ignore_eos=True, sampling=GREEDY
)


def one_slot_worker(worker_process: type, model: Path) -> WorkerProcess:
    """``llcuda serve`` with one slot and one thread: slow enough to catch mid-stream."""
    return worker_process.start(
        "-m", str(model), "--ctx", "1024", "--threads", "1", "--parallel", "1"
    )


@pytest.mark.timeout(60)
def test_killing_the_worker_mid_stream_errors_within_2s(
    smollm_path: Path, tiny_gguf: Path, worker_process: type
) -> None:
    w = one_slot_worker(worker_process, smollm_path)
    with RemoteEngine.connect(w.url) as remote:
        stream = remote.stream(LONG)
        received = [next(stream) for _ in range(3)]
        assert all(c.record is None for c in received)
        w.proc.send_signal(signal.SIGKILL)
        t0 = time.monotonic()
        with pytest.raises(WorkerError, match=r"closed the connection|stopped answering") as err:
            for chunk in stream:
                received.append(chunk)
        assert time.monotonic() - t0 < 2.0
        assert w.url in str(err.value) and "\n" not in str(err.value)
        assert "".join(c.text for c in received)  # what arrived before the kill is kept
        t0 = time.monotonic()
        with pytest.raises(WorkerError, match=r"cannot connect|closed the connection"):
            remote.generate(LONG)  # a pooled connection may be the first to notice
        assert time.monotonic() - t0 < 2.0
    assert_usable_elsewhere(tiny_gguf)


def assert_usable_elsewhere(model: Path) -> None:
    """The client side still works: against another worker, in the same process."""
    cfg = WorkerConfig(engine=EngineConfig(model, n_ctx=256, n_threads=1), model_name="other")
    with WorkerServer(cfg) as other, InferenceClient(other.url) as client:
        result = client.infer("hello", max_tokens=4, ignore_eos=True, temperature=0.0)
        assert result.record.generated_tokens == 4


@pytest.mark.timeout(60)
def test_sigterm_finishes_streams_cleanly_and_exits_0(
    smollm_path: Path, tiny_gguf: Path, worker_process: type
) -> None:
    two_slots = ["--ctx", "1024", "--threads", "1", "--parallel", "2", "--shutdown-grace", "1"]
    w = worker_process.start("-m", str(smollm_path), *two_slots)
    results: dict[str, object] = {}
    first = threading.Barrier(3)

    def run(name: str, request: GenerationRequest) -> None:
        try:
            with RemoteEngine.connect(w.url) as remote:
                stream = remote.stream(request)
                chunks = [next(stream)]
                first.wait(10)
                chunks += list(stream)
                results[name] = chunks[-1].record
        except BaseException as exc:  # checked below
            results[name] = exc

    short = GenerationRequest(prompt="Hello", max_tokens=12, ignore_eos=True, sampling=GREEDY)
    threads = [
        threading.Thread(target=run, args=("long", LONG)),
        threading.Thread(target=run, args=("short", short)),
    ]
    for t in threads:
        t.start()
    first.wait(20)
    w.signal(signal.SIGTERM)
    for t in threads:
        t.join(20)
    rc = w.proc.wait(20)
    long_rec, short_rec = results["long"], results["short"]
    assert short_rec.stop_reason == "length" and short_rec.generated_tokens == 12  # type: ignore[union-attr]
    assert long_rec.stop_reason == "cancelled"  # type: ignore[union-attr]
    assert 0 < long_rec.generated_tokens < 800  # type: ignore[union-attr]
    assert rc == 0
    assert "Traceback" not in (w.proc.stderr.read() if w.proc.stderr else "")
    out = w.proc.stdout.read() if w.proc.stdout else ""
    assert out.strip().splitlines()[-1] == "llcuda serve: stopped"
    assert_usable_elsewhere(tiny_gguf)


@pytest.fixture()
def silent_server() -> Iterator[str]:
    """Accepts connections and reads requests, never answers (a hung or cut-off worker)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    stop = threading.Event()
    conns: list[socket.socket] = []

    def accept() -> None:
        sock.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
                conns.append(conn)
            except TimeoutError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    stop.set()
    t.join()
    for c in conns:
        c.close()
    sock.close()


@pytest.mark.timeout(30)
def test_a_silent_worker_is_an_error_within_two_seconds(
    silent_server: str, tiny_gguf: Path
) -> None:
    for attempt in (
        lambda: RemoteEngine.connect(silent_server),
        lambda: InferenceClient(silent_server).infer("hello", max_tokens=2),
    ):
        t0 = time.monotonic()
        with pytest.raises(WorkerError, match=r"did not answer|stopped answering") as err:
            attempt()
        assert time.monotonic() - t0 < 2.5
        assert silent_server in str(err.value) and "\n" not in str(err.value)
    assert_usable_elsewhere(tiny_gguf)


@pytest.mark.timeout(60)
def test_a_stalled_worker_is_an_error_and_usable_once_it_runs(
    smollm_path: Path, worker_process: type
) -> None:
    w = one_slot_worker(worker_process, smollm_path)
    with RemoteEngine.connect(w.url) as remote:
        stream = remote.stream(LONG)
        assert next(stream).record is None
        w.signal(signal.SIGSTOP)  # alive, connections accepted by the kernel, no answers
        try:
            t0 = time.monotonic()
            with pytest.raises(WorkerError, match="stopped answering") as err:
                for _ in stream:
                    pass
            assert 1.5 < time.monotonic() - t0 < 4.0  # the 2 s read timeout, no sooner
            assert w.url in str(err.value) and "\n" not in str(err.value)
            t0 = time.monotonic()
            with pytest.raises(WorkerError, match="did not answer"):
                InferenceClient(w.url).infer("hello", max_tokens=2)
            assert time.monotonic() - t0 < 2.5
        finally:
            w.signal(signal.SIGCONT)
        short = GenerationRequest(prompt="Hello", max_tokens=4, ignore_eos=True, sampling=GREEDY)
        deadline = time.monotonic() + 20
        while True:  # the worker cancels the abandoned stream, then serves again
            try:
                assert remote.generate(short)[1].generated_tokens == 4
                break
            except WorkerError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
