"""Shared fixtures. Every test gets its own LLCUDA_HOME (nothing touches the user's files);
the starter models are resolved once per session; tiny random-weight GGUFs are generated."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from llcuda_tui.core.config import Paths, Settings

HAVE_LLAMA = importlib.util.find_spec("llama_cpp") is not None


def _has_gpu_build() -> bool:
    if not HAVE_LLAMA:
        return False
    from llcuda_tui.core.engine import build_info

    info = build_info()
    return info.backend == "CUDA" and bool(info.gpus)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if any(item.get_closest_marker("gpu") for item in items) and not _has_gpu_build():
        skip = pytest.mark.skip(reason="needs an NVIDIA GPU and a CUDA build of llama-cpp-python")
        for item in items:
            if item.get_closest_marker("gpu"):
                item.add_marker(skip)


@pytest.fixture(autouse=True)
def llcuda_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "llcuda-home"
    monkeypatch.setenv("LLCUDA_HOME", str(home))
    monkeypatch.delenv("LLCUDA_LLAMA_LOG", raising=False)
    return home


@pytest.fixture()
def settings(llcuda_home: Path) -> Settings:
    return Settings.load(Paths.from_env())


@pytest.fixture(scope="session")
def starter_paths(tmp_path_factory: pytest.TempPathFactory) -> Paths:
    """A session-wide home where the starter models are assembled once."""
    base = tmp_path_factory.mktemp("starter-home")
    return Paths.from_env({"LLCUDA_HOME": str(base)})


@pytest.fixture(scope="session")
def gemma_path(starter_paths: Paths) -> Path:
    from llcuda_tui.core.store import starter_path

    return starter_path("gemma-3-270m", starter_paths)


@pytest.fixture(scope="session")
def smollm_path(starter_paths: Paths) -> Path:
    from llcuda_tui.core.store import starter_path

    return starter_path("smollm2-135m-instruct", starter_paths)


@pytest.fixture(scope="session")
def gpu_model() -> Path:
    """A real-size GGUF on the GPU machine (the starter packages are too big to carry there):
    LLCUDA_TEST_GPU_MODEL, else the device recipe's synthetic small262k model."""
    path = Path(os.environ.get("LLCUDA_TEST_GPU_MODEL", "/root/models/small262k-q4km.gguf"))
    if not path.is_file():
        pytest.skip(f"no GPU test model at {path} (set LLCUDA_TEST_GPU_MODEL)")
    return path


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer llama-architecture model with random weights and a known vocabulary."""
    from tests.gguf_factory import write_tiny_llama

    return write_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama.gguf")


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer BERT-style encoder (mean pooling declared in its GGUF), random weights, a
    WordPiece vocabulary, 64 positions."""
    from tests.gguf_factory import write_tiny_bert

    return write_tiny_bert(tmp_path_factory.mktemp("tiny-bert") / "tiny-bert.gguf")


@pytest.fixture(scope="session")
def cpu_threads() -> int:
    return max(1, min(2, os.cpu_count() or 1))
