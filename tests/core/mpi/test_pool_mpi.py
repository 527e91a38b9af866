"""`mpiexec -n 2 llcuda serve --mpi` (CPU, Open MPI wheel): rank 0 serves the worker API and
spreads requests over both ranks' engines; /llcuda/v1/info and /metrics show every rank; SIGTERM
stops the whole pool; under ULFM a killed rank is reported and the rest keeps serving. Every
job is bounded by a timeout (a deadlock fails the test)."""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest

from llcuda_tui.core.mpi.launch import mpiexec_command, mpiexec_env
from tests.core.mpi.conftest import REPO
from tests.workerproc import Started, wait_ready

BODY = {"prompt": "Once upon a time", "max_tokens": 6, "temperature": 0}


class Pool:
    """``mpiexec -n N python -m llcuda_tui serve --mpi ...``; ``url`` once rank 0 is ready."""

    def __init__(self, mpiexec: Path, n: int, args: list[str], mpi_args: list[str] = ()) -> None:
        argv = [*mpi_args, sys.executable, "-m", "llcuda_tui", "serve", "--mpi", "--port", "0",
                *args]  # fmt: skip
        cmd = mpiexec_command(n, argv, mpiexec)
        env = mpiexec_env({**os.environ, "PYTHONUNBUFFERED": "1"})
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip
        self.url = wait_ready(self.proc, 45.0, self.kill, "the pool")
        info = httpx.get(f"{self.url}/llcuda/v1/info", timeout=10).json()
        self.rank_pids = [r["pid"] for r in info.get("pool", [])]
        """Every rank's pid: under ULFM a rank outlives a killed mpiexec."""

    def stop(self, pid: int | None = None, timeout_s: float = 30.0) -> tuple[int, str]:
        """SIGTERM to ``pid`` (default: mpiexec, which forwards it to every rank); the exit
        code and stderr."""
        os.kill(pid or self.proc.pid, signal.SIGTERM)
        try:
            _out, err = self.proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"the pool did not stop within {timeout_s} s of SIGTERM")
        return self.proc.returncode, err

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # mpiexec and its ranks: our own group
        self.proc.wait(10)
        for pid in getattr(self, "rank_pids", []):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture()
def pools(mpiexec: Path) -> Iterator[Started]:
    """Start pools (``.start(n, *args, mpi_args=[...])``); all are killed at the end."""

    def make(n: int, *args: str, mpi_args: Sequence[str] = ()) -> Pool:
        return Pool(mpiexec, n, list(args), list(mpi_args))

    started = Started(make)
    yield started
    started.kill_all()


def _model_args(tiny_gguf: Path) -> list[str]:
    return ["-m", str(tiny_gguf), "--ctx", "256", "--threads", "1", "--parallel", "2"]


def _complete(url: str, body: dict = BODY) -> httpx.Response:
    return httpx.post(f"{url}/v1/completions", json=body, timeout=20)


@pytest.mark.timeout(120)
def test_pool_spreads_requests_and_shows_every_rank(
    pools: type, tiny_gguf: Path, tmp_path: Path
) -> None:
    from llcuda_tui.core.engine import Engine, EngineConfig, GenerationRequest, SamplingParams

    with Engine.load(EngineConfig(tiny_gguf, n_ctx=256, n_threads=1)) as engine:
        expected, _ = engine.generate(
            GenerationRequest(
                prompt=BODY["prompt"], max_tokens=6, sampling=SamplingParams(temperature=0.0)
            )
        )
    pool = pools.start(2, *_model_args(tiny_gguf))
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        replies = list(ex.map(lambda _: _complete(pool.url), range(8)))
    assert [r.status_code for r in replies] == [200] * 8
    assert {r.json()["choices"][0]["text"] for r in replies} == {expected}
    with httpx.stream(
        "POST", f"{pool.url}/v1/completions", json={**BODY, "stream": True}, timeout=20
    ) as stream:
        body = "".join(stream.iter_text())
    assert body.rstrip().endswith("data: [DONE]")

    info = httpx.get(f"{pool.url}/llcuda/v1/info", timeout=10).json()
    ranks = {r["rank"]: r for r in info["pool"]}
    assert set(ranks) == {0, 1} and all(r["alive"] for r in ranks.values())
    assert ranks[0]["assigned"] > 0 and ranks[1]["assigned"] > 0  # least-loaded scheduling
    assert sum(r["assigned"] for r in ranks.values()) == 9
    assert info["stats"]["slots"] == 4  # both ranks' slots
    metrics = httpx.get(f"{pool.url}/metrics", timeout=10).text
    assert "llcuda_pool_rank_up{host=" in metrics and 'rank="1"} 1.0' in metrics
    assert "llcuda_generated_tokens_total 54.0" in metrics
    gpu = httpx.get(f"{pool.url}/llcuda/v1/gpu", timeout=20)
    assert gpu.status_code == 200 and "snapshot" in gpu.json()  # no GPU here: an empty view

    code, err = pool.stop(pid=ranks[0]["pid"])  # rank 0 drains, then stops every rank
    assert code == 0, err
    assert "Traceback" not in err


@pytest.mark.timeout(60)
def test_sigterm_to_mpiexec_stops_every_rank(pools: type, tiny_gguf: Path) -> None:
    pool = pools.start(2, *_model_args(tiny_gguf))
    assert _complete(pool.url).status_code == 200
    _code, err = pool.stop()
    assert "Traceback" not in err


@pytest.mark.timeout(120)
def test_pool_without_root_engine(pools: type, tiny_gguf: Path) -> None:
    pool = pools.start(2, *_model_args(tiny_gguf), "--no-root-engine")
    replies = [_complete(pool.url) for _ in range(3)]
    assert [r.status_code for r in replies] == [200] * 3
    too_long = _complete(pool.url, {**BODY, "prompt": "word " * 400})
    assert too_long.status_code == 400 and "the prompt has" in too_long.text
    info = httpx.get(f"{pool.url}/llcuda/v1/info", timeout=10).json()
    assert [(r["rank"], r["assigned"]) for r in info["pool"]] == [(1, 3)]


@pytest.mark.timeout(120)
def test_a_killed_rank_is_reported_and_the_pool_goes_on(
    pools: type, mpiexec: Path, tiny_gguf: Path
) -> None:
    from llcuda_tui.core.mpi.launch import is_open_mpi

    if not is_open_mpi(mpiexec):
        pytest.skip("needs Open MPI's fault-tolerant mode (mpiexec --with-ft ulfm)")
    pool = pools.start(
        2, *_model_args(tiny_gguf), "--rank-timeout", "2", mpi_args=["--with-ft", "ulfm"]
    )
    info = httpx.get(f"{pool.url}/llcuda/v1/info", timeout=10).json()
    rank1 = next(r for r in info["pool"] if r["rank"] == 1)
    os.kill(rank1["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        info = httpx.get(f"{pool.url}/llcuda/v1/info", timeout=10).json()
        if not next(r for r in info["pool"] if r["rank"] == 1)["alive"]:
            break
        time.sleep(0.2)
    else:
        pytest.fail("rank 1 was not reported dead")
    replies = [_complete(pool.url) for _ in range(3)]
    assert [r.status_code for r in replies] == [200] * 3
    assert "rank 1 on" in next(r for r in info["pool"] if r["rank"] == 1)["error"]
    pool.kill()
    assert pool.proc.stderr is not None
    assert "the pool goes on with 1 rank(s)" in pool.proc.stderr.read()


@pytest.mark.timeout(60)
def test_port_in_use_is_one_line_from_rank_0(mpiexec: Path, tiny_gguf: Path) -> None:
    import socket

    from tests.core.mpi.conftest import run_mpi

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = str(busy.getsockname()[1])
        argv = ["-m", "llcuda_tui", "serve", "--mpi", "--port", port, *_model_args(tiny_gguf)]
        done = run_mpi(mpiexec, 2, argv)
    assert done.returncode == 1
    errors = [x for x in done.stderr.splitlines() if x.startswith("llcuda: error:")]
    assert len(errors) == 1 and f"cannot listen on 127.0.0.1:{port}" in errors[0], done.stderr


@pytest.mark.timeout(120)
def test_a_client_going_away_cancels_on_the_remote_rank(pools: type, tiny_gguf: Path) -> None:
    pool = pools.start(
        2, "-m", str(tiny_gguf), "--ctx", "4096", "--threads", "1", "--parallel", "2"
    )
    assert _complete(pool.url).status_code == 200  # rank 0 took it: the next goes to rank 1
    body = {"prompt": "tell me", "max_tokens": 4000, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", f"{pool.url}/v1/completions", json=body, timeout=20) as stream:
        for n, _line in enumerate(stream.iter_lines()):
            if n > 20:
                break  # leave mid-stream
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        runs = httpx.get(f"{pool.url}/llcuda/v1/runs", timeout=10).json()["runs"]
        if len(runs) == 2:
            break
        time.sleep(0.05)
    record = runs[0]["record"]
    assert record["stop_reason"] == "cancelled" and record["generated_tokens"] < 4000
    info = httpx.get(f"{pool.url}/llcuda/v1/info", timeout=10).json()
    assert [(r["rank"], r["assigned"], r["in_flight"]) for r in info["pool"]] == [
        (0, 1, 0),
        (1, 1, 0),
    ]
