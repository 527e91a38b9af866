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
    default_threads,
)


def tuner(**kw: int) -> tuple[ThreadTuner, list[int]]:
    calls: list[int] = []
    return ThreadTuner(calls.append, 4, window=4, first=2, retry=8, every=8, **kw), calls


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


def test_a_little_faster_is_not_enough() -> None:
    t, calls = tuner()
    feed(t, {4: 0.010, 2: 0.009}, 2 + 4)  # 2 threads 10 % faster: under the margin
    feed(t, {4: 0.010, 2: 0.009}, 4)
    assert t.current == 4 and calls == [2, 4]


def test_stalls_count_even_when_most_steps_are_fast() -> None:
    t, _ = tuner()
    stalling = iter([0.016, 0.016, 0.016, 0.016, 0.2, 0.016, 0.016, 0.016] * 4)
    for _ in range(2 + 4):  # first, then a measure at 4: fast steps and a stall
        t.step(next(stalling))
    for _ in range(4):
        t.step(0.024)  # 2 threads: slower per step, no stalls
    assert t.current == 2 and t.switches == 1  # the median (16 ms) would have kept 4


def test_an_early_verdict_gets_another_chance_soon_and_a_collapsed_probe_stops_early() -> None:
    calls: list[int] = []
    t = ThreadTuner(calls.append, 4, window=4, first=2, retry=4, every=64)
    feed(t, {4: 0.010, 2: 0.018}, 2 + 8)  # no gain: the next probe 8 steps later
    feed(t, {4: 0.200, 2: 0.020}, 8 + 8)  # the cores got taken meanwhile: it moves
    assert (t.current, t.switches) == (2, 1)
    steps = 0
    while t.current == 2 and steps < 200:  # after a switch: the next probe ~64 steps later
        t.step(0.020)
        steps += 1
    assert 64 <= steps <= 64 + 4 + 2 and t.current == 4
    t.step(0.200)
    assert t.current == 4
    t.step(0.200)  # two collapsed steps end the probe
    assert t.current == 2 and t.switches == 1


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
def test_the_default_engine_probes_its_thread_count_and_llama_cpp_uses_it(
    smollm_path: Path, every_core_busy: None
) -> None:
    # with every core taken the count it keeps depends on the scheduler (two threads collapse
    # to 2.5 t/s on a loaded 2-core VM, or only stall now and then): the decisions are the
    # tests above; here the tuner runs in the real engine and llama.cpp gets what it picks
    import llama_cpp as L

    req = GenerationRequest(
        prompt="Once upon a time", max_tokens=48, sampling=SamplingParams(temperature=0.0),
        ignore_eos=True,
    )  # fmt: skip
    with Engine.load(EngineConfig(smollm_path, n_ctx=512, n_gpu_layers=0)) as engine:
        tuner = engine.threads
        assert tuner is not None and tuner.full == engine.info.n_threads > 1
        _, record = engine.generate(req)
        assert record.generated_tokens == 48
        assert tuner.probes >= 1 and tuner.current in (tuner.full, tuner.low)
        assert engine.run_on_engine(lambda: L.llama_n_threads(engine.ctx_ptr)) == tuner.current


def test_a_thread_count_the_user_chose_stays_and_gives_the_same_text(smollm_path: Path) -> None:
    req = GenerationRequest(
        prompt="Once upon a time", max_tokens=24, sampling=SamplingParams(temperature=0.0),
        ignore_eos=True,
    )  # fmt: skip
    texts = []
    for threads in (0, 1, 2):
        cfg = EngineConfig(smollm_path, n_ctx=512, n_gpu_layers=0, n_threads=threads)
        with Engine.load(cfg) as engine:
            tuned = threads == 0 and default_threads() > 1
            assert (engine.threads is not None) == tuned  # the user's count stays
            texts.append(engine.generate(req)[0])
    assert texts[0] == texts[1] == texts[2]  # same greedy text at any thread count
