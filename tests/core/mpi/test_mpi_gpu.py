"""MPI on a machine with 2 GPUs or more (run on the GPU machine: pytest -m gpu): each rank of
``mpiexec -n 2`` gets its own GPU, batch mode and the pool run there with CUDA."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from llcuda_tui.core.mpi.devices import node_gpus
from tests.core.mpi.conftest import read_results, run_mpi, write_prompts

pytestmark = [pytest.mark.gpu, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def two_gpus() -> list[str]:
    gpus = node_gpus()
    if len(gpus) < 2:
        pytest.skip(f"needs 2 GPUs, this machine has {len(gpus)}")
    return gpus


def test_batch_puts_each_rank_on_its_own_gpu(
    mpiexec: Path, two_gpus: list[str], tiny_gguf: Path, tmp_path: Path
) -> None:
    src = write_prompts(tmp_path / "in.jsonl", 32, max_tokens=32)
    out, summary = tmp_path / "out.jsonl", tmp_path / "summary.json"
    argv = ["-m", "llcuda_tui", "batch", "--mpi", "-m", str(tiny_gguf), "-i", str(src),
            "-o", str(out), "--temp", "0", "--ctx", "512", "--summary", str(summary),
            "-q"]  # fmt: skip
    done = run_mpi(mpiexec, 2, argv, timeout_s=240)
    assert done.returncode == 0, done.stderr
    s = json.loads(summary.read_text())
    assert sorted(tuple(r["gpus"]) for r in s["ranks"]) == [(two_gpus[0],), (two_gpus[1],)]
    results = read_results(out)
    assert len(results) == 32 and all("CUDA" in r["record"]["backend"] for r in results)


def test_pool_serves_from_both_gpus(mpiexec: Path, two_gpus: list[str], tiny_gguf: Path) -> None:
    from tests.core.mpi.test_pool_mpi import Pool

    pool = Pool(mpiexec, 2, ["-m", str(tiny_gguf), "--ctx", "512", "--parallel", "2"])
    try:
        for _ in range(4):
            reply = httpx.post(
                f"{pool.url}/v1/completions",
                json={"prompt": "hello", "max_tokens": 16, "temperature": 0},
                timeout=60,
            )
            assert reply.status_code == 200
        info = httpx.get(f"{pool.url}/llcuda/v1/info", timeout=10).json()
        assert sorted(tuple(r["gpus"]) for r in info["pool"]) == [(two_gpus[0],), (two_gpus[1],)]
        assert all(r["assigned"] == 2 for r in info["pool"])
        gpu = httpx.get(f"{pool.url}/llcuda/v1/gpu", timeout=30).json()
        assert len(gpu["snapshot"]["gpus"]) >= 2
    finally:
        pool.kill()
