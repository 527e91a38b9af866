"""The engine in a child process (what the TUI chats through), on real models (CPU)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from llcuda_tui.core.engine import (
    FLUSH_INTERVAL_S,
    Engine,
    EngineConfig,
    GenerationRequest,
    ProcessEngine,
    SamplingParams,
)
from llcuda_tui.core.errors import EngineError, ModelLoadError, UserInputError

GREEDY = SamplingParams(temperature=0.0)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0): look at its state
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(")")[-1].split()[0] != "Z"


def _wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


@pytest.fixture(scope="module")
def child(tiny_gguf: Path, cpu_threads: int):
    with ProcessEngine.load(EngineConfig(tiny_gguf, n_ctx=1024, n_threads=cpu_threads)) as eng:
        yield eng


def test_smollm_chat_same_as_in_process(smollm_path: Path, cpu_threads: int) -> None:
    cfg = EngineConfig(smollm_path, n_ctx=2048, n_threads=cpu_threads)
    msgs = [{"role": "user", "content": "Name three colours."}]
    req = GenerationRequest(messages=msgs, max_tokens=24, sampling=GREEDY)
    fractions: list[float] = []
    with ProcessEngine.load(cfg, on_progress=fractions.append) as remote:
        assert remote.pid != os.getpid()
        assert remote.info.backend == "CPU" and remote.info.n_ctx == 2048
        remote_text, remote_rec = remote.generate(req)
        remote_count = remote.count_tokens(req)
    with Engine.load(cfg) as local:
        local_text, local_rec = local.generate(req)
        assert remote_count == local.count_tokens(req) == remote_rec.prompt_tokens
    assert remote_text == local_text and remote_text.strip()
    assert remote_rec.generated_tokens == local_rec.generated_tokens
    assert remote_rec.decode_tokens_per_s > 0
    # load progress came over, rising, and reached the end
    assert fractions and fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)


def test_chunks_cross_in_batches(child: ProcessEngine) -> None:
    req = GenerationRequest(prompt="hello", max_tokens=200, sampling=GREEDY, ignore_eos=True)
    before, t0 = child.frames_received, time.perf_counter()
    chunks = list(child.stream(req))
    frames, elapsed = child.frames_received - before, time.perf_counter() - t0
    assert len(chunks) == 201 and chunks[-1].record is not None  # 200 tokens + the record's
    assert chunks[-1].record.generated_tokens == 200
    # at most one frame per flush interval, plus the first token's and the record's (a bound
    # from the measured time: a loaded machine makes tokens slower, not frames smaller)
    assert 1 <= frames <= 2 + elapsed / FLUSH_INTERVAL_S, (frames, elapsed)


def test_cancel_stops_within_one_token(child: ProcessEngine) -> None:
    seen: list[str] = []
    first = threading.Event()

    def on_chunk(chunk) -> None:
        seen.append(chunk.text)
        first.set()

    req = GenerationRequest(prompt="hello", max_tokens=100_000, sampling=GREEDY, ignore_eos=True)
    handle = child.submit(req, on_chunk)
    assert first.wait(10)
    child.cancel()
    rec = handle.result(10)
    assert rec.stop_reason == "cancelled"
    assert rec.generated_tokens < 100_000
    assert len(seen) == rec.generated_tokens + 1  # every token's chunk arrived, then the record


def test_errors_cross_with_their_type(child: ProcessEngine) -> None:
    too_long = GenerationRequest(tokens=[5] * 2000, max_tokens=4, sampling=GREEDY)
    with pytest.raises(UserInputError, match="context holds 1024"):
        child.generate(too_long)
    errors: list[BaseException] = []
    handle = child.submit(too_long, lambda c: None, errors.append)
    with pytest.raises(UserInputError):
        handle.result(10)
    assert len(errors) == 1 and isinstance(errors[0], UserInputError)
    # and it still works
    _, rec = child.generate(GenerationRequest(prompt="hi", max_tokens=2, sampling=GREEDY))
    assert rec.generated_tokens >= 1


def test_bad_file_fails_before_any_process(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 20)
    with pytest.raises(ModelLoadError):
        ProcessEngine.load(EngineConfig(bad))


def test_child_killed_mid_reply_is_a_clear_error(tiny_gguf: Path) -> None:
    eng = ProcessEngine.load(EngineConfig(tiny_gguf, n_ctx=256, n_threads=1))
    try:
        errors: list[BaseException] = []
        first = threading.Event()
        req = GenerationRequest(prompt="x", max_tokens=10**6, sampling=GREEDY, ignore_eos=True)
        handle = eng.submit(req, lambda c: first.set(), errors.append)
        assert first.wait(10)
        t0 = time.monotonic()
        os.kill(eng.pid, signal.SIGKILL)
        with pytest.raises(EngineError, match=r"engine process stopped \(exit code -9\)"):
            handle.result(5)
        assert time.monotonic() - t0 < 2.5
        assert len(errors) == 1 and isinstance(errors[0], EngineError)
        with pytest.raises(EngineError, match="engine process stopped"):
            eng.count_tokens(GenerationRequest(prompt="x"))
    finally:
        eng.close()
    eng.close()  # idempotent


def test_close_ends_the_child(tiny_gguf: Path) -> None:
    eng = ProcessEngine.load(EngineConfig(tiny_gguf, n_ctx=256, n_threads=1))
    pid = eng.pid
    eng.close()
    assert _wait_gone(pid, 1.0)
    with pytest.raises(EngineError, match="closed"):
        eng.generate(GenerationRequest(prompt="x", max_tokens=1))


def test_child_exits_when_the_parent_dies(tiny_gguf: Path, tmp_path: Path) -> None:
    """A parent killed without closing (SIGKILL: no cleanup at all) leaves no engine behind."""
    script = textwrap.dedent(
        f"""
        import sys, time
        from llcuda_tui.core.engine import EngineConfig, ProcessEngine
        eng = ProcessEngine.load(EngineConfig({str(tiny_gguf)!r}, n_ctx=256, n_threads=1))
        print(eng.pid, flush=True)
        time.sleep(60)
        """
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=Path.cwd()
    )
    try:
        assert parent.stdout is not None
        child_pid = int(parent.stdout.readline())
        assert _alive(child_pid)
        parent.kill()
        parent.wait(10)
        assert _wait_gone(child_pid, 10.0), "the engine process outlived its parent"
    finally:
        parent.kill()


@pytest.mark.gpu
def test_on_the_gpu_same_tokens_and_its_memory_counted_as_ours(gpu_model: Path) -> None:
    from llcuda_tui.core.gpu import GpuSampler

    req = GenerationRequest(prompt="hello", max_tokens=64, sampling=GREEDY, ignore_eos=True)
    with Engine.load(EngineConfig(gpu_model)) as local:
        local_text, _ = local.generate(req)
    sampler = GpuSampler(processes=True)
    try:
        with ProcessEngine.load(EngineConfig(gpu_model)) as remote:
            assert remote.info.backend.startswith("CUDA0"), remote.info.backend
            assert remote.info.n_layers_offloaded == remote.info.n_layers
            text, rec = remote.generate(req)
            assert text == local_text and rec.generated_tokens == 64
            sampler.add_own_pid(remote.pid)
            g = sampler.sample().gpus[0]
        assert g.processes is not None, "NVML lists no processes here"
        child = [p for p in g.processes if p.pid == remote.pid]
        assert child and child[0].is_self, [p.pid for p in g.processes]
        assert (child[0].used_memory_bytes or 0) > 100 * 2**20
    finally:
        sampler.close()


def test_a_failing_callback_does_not_stop_the_engine(child: ProcessEngine) -> None:
    def bad(chunk) -> None:
        raise RuntimeError("consumer bug")

    req = GenerationRequest(prompt="hello", max_tokens=8, sampling=GREEDY, ignore_eos=True)
    handle = child.submit(req, bad)
    assert handle.result(10).generated_tokens == 8  # it still ends, with its record
    assert isinstance(child.callback_error, RuntimeError)
    _, rec = child.generate(req)  # and the pipe reader is still serving
    assert rec.generated_tokens == 8
