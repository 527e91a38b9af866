"""`llcuda serve` as a user runs it: bad input is one line and exit 2. A worker killed, stalled
or sent SIGTERM mid-stream is in tests/faults/test_worker_faults.py."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from llcuda_tui.cli import main
from tests.workerproc import REPO


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
        (["--header-timeout", "0"], "--header-timeout must be > 0"),
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
