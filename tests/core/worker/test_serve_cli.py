"""`llcuda serve` as a user runs it: bad input is one line and exit 2; a worker killed mid-stream
is a client error within 2 s; SIGTERM ends in-flight streams cleanly and exits 0."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from llcuda_tui.cli import main
from llcuda_tui.core.engine import GenerationRequest
from llcuda_tui.core.sampling import SamplingParams
from llcuda_tui.core.worker.client import RemoteEngine, WorkerError
from tests.core.worker.conftest import REPO

GREEDY = SamplingParams(temperature=0.0)
LONG = GenerationRequest(
    prompt="Once upon a time", max_tokens=800, ignore_eos=True, sampling=GREEDY
)


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("llcuda: error: "), err
    return err[0]


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--host", "0.0.0.0"], "refusing to listen on 0.0.0.0 without --api-key-file"),
        (["--api-key-file", "/nonexistent/key"], "cannot read --api-key-file"),
        (["--tls-cert", "c.pem"], "--tls-cert and --tls-key go together"),
        (["--tls-cert", "/no/c.pem", "--tls-key", "/no/k.pem"], "no such file"),
        (["--parallel", "0"], "--parallel must be in"),
        (["--port", "70000"], "--port must be in"),
        (["--ctx", "-5"], "--ctx must be >= 0"),
        (["--max-body-bytes", "10"], "--max-body-bytes"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tiny_gguf: Path, capsys: pytest.CaptureFixture[str], extra: list[str], fragment: str
) -> None:
    assert main(["serve", "-m", str(tiny_gguf), *extra]) == 2
    assert fragment in _one_error_line(capsys)


@pytest.mark.timeout(30)
def test_key_files_and_models_are_checked(
    tiny_gguf: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.key"
    empty.write_text("\n")
    assert main(["serve", "-m", str(tiny_gguf), "--api-key-file", str(empty)]) == 2
    assert "is empty" in _one_error_line(capsys)
    short = tmp_path / "short.key"
    short.write_text("abc\n")
    assert main(["serve", "-m", str(tiny_gguf), "--api-key-file", str(short)]) == 2
    assert "too short" in _one_error_line(capsys)
    assert main(["serve", "-m", str(tmp_path / "missing.gguf")]) == 2
    assert "not found" in _one_error_line(capsys)
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a model at all, honestly")
    assert main(["serve", "-m", str(junk)]) == 2
    assert "not a GGUF file" in _one_error_line(capsys)
    garbage = tmp_path / "cert.pem"
    garbage.write_text("garbage")
    args = ["serve", "-m", str(tiny_gguf), "--tls-cert", str(garbage), "--tls-key", str(garbage)]
    assert main(args) == 2
    assert "TLS" in _one_error_line(capsys)


@pytest.mark.timeout(30)
def test_a_busy_port_is_one_line_and_exit_1(
    tiny_gguf: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert main(["serve", "-m", str(tiny_gguf), "--port", str(port)]) == 1
    assert f"cannot listen on 127.0.0.1:{port}" in _one_error_line(capsys)


@pytest.mark.timeout(30)
def test_a_model_that_fails_to_load_ends_the_worker(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + b"\0" * 64)
    proc = subprocess.run(
        [sys.executable, "-m", "llcuda_tui", "serve", "-m", str(bad), "--port", "0"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("llcuda: error: cannot load") and "Traceback" not in proc.stderr


@pytest.mark.timeout(60)
def test_killing_the_worker_mid_stream_errors_within_2s(
    smollm_path: Path, worker_process: type
) -> None:
    w = worker_process.start(
        "-m", str(smollm_path), "--ctx", "1024", "--threads", "1", "--parallel", "1"
    )
    with RemoteEngine.connect(w.url) as remote:
        stream = remote.stream(LONG)
        for _ in range(3):
            assert next(stream).record is None
        w.proc.send_signal(signal.SIGKILL)
        t0 = time.monotonic()
        with pytest.raises(WorkerError, match=r"closed the connection|stopped answering"):
            for _ in stream:
                pass
        assert time.monotonic() - t0 < 2.0
        t0 = time.monotonic()
        with pytest.raises(WorkerError, match=r"cannot connect|closed the connection"):
            remote.generate(LONG)  # a pooled connection may be the first to notice
        assert time.monotonic() - t0 < 2.0


@pytest.mark.timeout(60)
def test_sigterm_finishes_streams_cleanly_and_exits_0(
    smollm_path: Path, worker_process: type
) -> None:
    w = worker_process.start(
        "-m",
        str(smollm_path),
        "--ctx",
        "1024",
        "--threads",
        "1",
        "--parallel",
        "2",
        "--shutdown-grace",
        "1",
    )
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
