"""Shared by the store tests and the fault tests: the local Hub stand-in as fixtures
(``files``, ``server``), a ``store`` in the test's LLCUDA_HOME, small GGUFs to import
(``models``) and helpers to run and damage things. Conftests re-export the fixtures."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from llcuda_tui.core.config import Paths
from llcuda_tui.core.store import Store
from tests.core.hubserver import HubServer, write_gguf

REPO = "acme/tiny-llama"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("hubfiles")
    shards = write_gguf(d / "tiny-Q2_K.gguf", seed=13, split_max_tensors=8)
    return {
        "tiny-Q4_K_M.gguf": write_gguf(d / "tiny-Q4_K_M.gguf", seed=11)[0],
        "tiny-Q8_0.gguf": write_gguf(d / "tiny-Q8_0.gguf", seed=12)[0],
        "big-Q6_K.gguf": write_gguf(d / "big-Q6_K.gguf", n_embd=256, n_ff=512, seed=14)[0],
        **{f"split/{s.name}": s for s in shards},
    }


@pytest.fixture()
def server(files, tmp_path, monkeypatch) -> Iterator[HubServer]:
    with HubServer() as srv:
        srv.add_repo(REPO, {**files, "README.md": b"# tiny\n"})
        monkeypatch.setenv("HF_ENDPOINT", srv.url)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
        for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "HF_HUB_CACHE"):
            monkeypatch.delenv(var, raising=False)
        yield srv


@pytest.fixture()
def store(llcuda_home: Path) -> Store:
    return Store(Paths.from_env())


def downloads(srv: HubServer, path: str) -> list[str | None]:
    """The Range header (None: whole file) of each GET of ``path``."""
    return [r.headers.get("range") for r in srv.requests("GET", contains=path)]


def pull_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """``llcuda models pull`` as a separate process (a user's terminal)."""
    return subprocess.Popen(
        [sys.executable, "-m", "llcuda_tui", "models", "pull", *args],
        cwd=ROOT, env={**os.environ, **(env or {})}, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def assert_consistent(store: Store) -> None:
    report = store.verify()
    assert report.ok, report.problems


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("models")
    return {
        "a": write_gguf(d / "alpha-Q4_K_M.gguf", seed=1)[0],
        "b": write_gguf(d / "beta-Q8_0.gguf", seed=2)[0],
        "c": write_gguf(d / "gamma-Q5_K_M.gguf", seed=3)[0],
        "d": write_gguf(d / "delta-Q6_K.gguf", seed=4)[0],
        "split": write_gguf(d / "split-Q2_K.gguf", seed=5, split_max_tensors=8)[0],
    }


def copy_of(src: Path, tmp_path: Path) -> Path:
    """A private copy (imports hardlink, and some tests damage the file)."""
    dst = tmp_path / "own" / src.name
    dst.parent.mkdir(exist_ok=True)
    dst.write_bytes(src.read_bytes())
    return dst


def flip_byte(path: Path, keep_mtime: bool = False) -> None:
    st = path.stat()
    os.chmod(path, 0o644)
    with open(path, "r+b") as fh:
        fh.seek(st.st_size // 2)
        b = fh.read(1)
        fh.seek(st.st_size // 2)
        fh.write(bytes([b[0] ^ 0x01]))
    os.chmod(path, 0o444)
    if keep_mtime:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
