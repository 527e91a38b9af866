"""The CPU engine's thread count under contention (core/engine/_threads.py, #15 item 5).

The tuner's decisions from given step times; then the real thing: the starter model decoding
with every core of this machine taken by busy processes, where llama.cpp's spinning threads
collapse (2.5 t/s with 2 threads against 17-37 with 1 on the 2-core VM): the default engine
moves to fewer threads by itself, and an engine whose count the user chose keeps it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from llcuda_tui.core.engine import (
    Engine,
    EngineConfig,
    GenerationRequest,
    SamplingParams,
    ThreadTuner,
)


def tuner(**kw: int) -> tuple[ThreadTuner, list[int]]:
    calls: list[int] = []
    return ThreadTuner(calls.append, 4, window=4, first=2, every=8, **kw), calls


def feed(t: ThreadTuner, seconds_at: dict[int, float], steps: int, shape: int = 0) -> None:
    for _ in range(steps):
        t.step(seconds_at[t.current], shape)


def test_a_collapsed_count_is_left_for_the_lower_one() -> None:
    t, calls = tuner()
    feed(t, {4: 0.200, 2: 0.020}, 2 + 4 + 4)  # first, measure at 4, probe at 2
    assert (t.current, t.switches, calls) == (2, 1, [2])
    feed(t, {4: 0.200, 2: 0.020}, 100)  # later probes of 4 find it still slow
    assert t.current == 2 and calls.count(4) == calls.count(2) - 1


def test_a_probe_that_finds_nothing_goes_back_and_waits_longer() -> None:
    t, calls = tuner()
    feed(t, {4: 0.010, 2: 0.018}, 2 + 8)
    assert (t.current, t.switches, calls) == (4, 0, [2, 4])
    feed(t, {4: 0.010, 2: 0.018}, 8 + 8)  # the next probe comes after 16 steps, not 8
    assert calls == [2, 4]
    feed(t, {4: 0.010, 2: 0.018}, 8 + 8)
    assert calls == [2, 4, 2, 4]


def test_a_little_faster_is_not_enough_and_one_slow_step_decides_nothing() -> None:
    t, calls = tuner()
    feed(t, {4: 0.010, 2: 0.009}, 2 + 4)  # 2 threads 10 % faster: under the margin
    feed(t, {4: 0.010, 2: 0.009}, 4)
    assert t.current == 4 and calls == [2, 4]
    t2, _ = tuner()
    times = iter([0.01, 0.01, 0.01, 0.5, 0.01, 0.01] + [0.01] * 4)  # one hiccup while measuring
    for _ in range(10):
        t2.step(next(times))
    assert t2.current == 4 and t2.switches == 0


def test_a_step_of_another_shape_ends_a_probe_at_the_count_it_started_from() -> None:
    t, calls = tuner()
    feed(t, {4: 0.2, 2: 0.02}, 2 + 4 + 2, shape=8)  # probing at 2 threads
    assert t.current == 2
    t.step(0.5, shape=9)  # a sequence joined: not comparable
    assert t.current == 4 and t.switches == 0 and calls == [2, 4]


@pytest.fixture()
def every_core_busy() -> Iterator[None]:
    spin = "while True: pass"
    procs = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(os.cpu_count() or 1)]
    try:
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: one thread either way")
@pytest.mark.timeout(600)
def test_the_default_engine_leaves_spinning_threads_when_the_cores_are_taken(
    smollm_path: Path, every_core_busy: None
) -> None:
    req = GenerationRequest(
        prompt="Once upon a time", max_tokens=24, sampling=SamplingParams(temperature=0.0),
        ignore_eos=True,
    )  # fmt: skip
    with Engine.load(EngineConfig(smollm_path, n_ctx=512, n_gpu_layers=0)) as engine:
        assert engine.threads is not None and engine.threads.full == engine.info.n_threads > 1
        text, record = engine.generate(req)
        assert record.generated_tokens == 24
        assert engine.threads.current < engine.threads.full and engine.threads.switches >= 1
    chosen = EngineConfig(smollm_path, n_ctx=512, n_gpu_layers=0, n_threads=2)
    with Engine.load(chosen) as engine:
        assert engine.threads is None  # the user's count stays
        assert engine.generate(req)[0] == text  # same greedy text at any thread count
