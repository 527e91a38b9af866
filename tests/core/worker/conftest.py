"""Workers for the tests: in-thread servers on 127.0.0.1 (shared by the package) and
``llcuda serve`` subprocesses (for kill and SIGTERM tests)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llcuda_tui.core.engine import EngineConfig
from llcuda_tui.core.worker import WorkerConfig, WorkerServer
from tests.workerproc import worker_process  # noqa: F401

API_KEY = "test-key-0123456789"


def tiny_config(model: Path, n_ctx: int = 1024, **overrides: Any) -> WorkerConfig:
    """A worker of the tiny random model: 4 slots sharing ``n_ctx`` tokens, API key
    :data:`API_KEY` (``api_key=None`` for none)."""
    kw: dict[str, Any] = dict(model_name="tiny", parallel=4, api_key=API_KEY)
    kw.update(overrides)
    return WorkerConfig(engine=EngineConfig(model, n_ctx=n_ctx, n_threads=1), **kw)


@pytest.fixture(scope="package")
def tiny_worker(tiny_gguf: Path) -> Iterator[WorkerServer]:
    """The tiny random model, 4 slots of 1024 tokens, API key :data:`API_KEY`."""
    with WorkerServer(tiny_config(tiny_gguf)) as worker:
        yield worker


@pytest.fixture(scope="package")
def smollm_worker(smollm_path: Path, cpu_threads: int) -> Iterator[WorkerServer]:
    """The starter chat model, 2 slots of 1024 tokens, no API key."""
    cfg = WorkerConfig(
        engine=EngineConfig(smollm_path, n_ctx=1024, n_threads=cpu_threads),
        model_name="smollm",
        parallel=2,
    )
    with WorkerServer(cfg) as worker:
        yield worker


def auth() -> dict[str, str]:
    return {"authorization": f"Bearer {API_KEY}"}
