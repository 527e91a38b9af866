"""MPI test helpers: ``mpiexec`` (the Open MPI wheel's, in the venv's bin, or one on PATH) and
a runner that bounds every job with a timeout, so a deadlock fails the test instead of hanging."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from llcuda_tui.core.mpi.launch import find_mpiexec, mpiexec_command, mpiexec_env

REPO = Path(__file__).resolve().parents[3]
MPI_TIMEOUT_S = 45.0


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture(autouse=True)
def mpi_session_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh TMPDIR for each test's mpiexec, removed afterwards. Open MPI keeps its session
    directory (PMIx sockets included) in TMPDIR as ``ompi.<pid of mpiexec>``; the tests that
    SIGKILL a pool leave theirs behind, and a later mpiexec that gets the same pid then fails
    with "The PMIx server's listener thread failed to start" (seen once in a full run here,
    with 105 stale directories in /tmp)."""
    path = Path(tempfile.mkdtemp(prefix="mpi-"))  # short: socket paths have a length limit
    monkeypatch.setenv("TMPDIR", str(path))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def mpiexec() -> Path:
    exe = find_mpiexec()
    if exe is None:
        pytest.skip("no mpiexec: install the 'mpi' extra (mpi4py, openmpi)")
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        pytest.skip("mpi4py is not installed: install the 'mpi' extra")
    return exe


def run_mpi(
    mpiexec: Path, n: int, argv: list[str], env: dict[str, str] | None = None,
    timeout_s: float = MPI_TIMEOUT_S,
) -> Done:  # fmt: skip
    """``mpiexec -n N python argv...`` in the repo; fails the test on timeout."""
    full_env = mpiexec_env({**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    cmd = mpiexec_command(n, [sys.executable, *argv], mpiexec)
    try:
        proc = subprocess.run(
            cmd, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"mpiexec -n {n} did not finish in {timeout_s} s (deadlock?): {exc.stderr}")
    return Done(proc.returncode, proc.stdout, proc.stderr)


def write_prompts(path: Path, n: int, max_tokens: int = 6) -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            line: dict[str, Any] = {
                "id": f"q{i}",
                "prompt": f"item {i} says",
                "max_tokens": max_tokens,
            }
            fh.write(json.dumps(line) + "\n")
    return path


def read_results(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
