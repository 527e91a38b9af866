"""The batched engine and the worker on a GPU (run on the GPU machine: pytest -m gpu), with
per-sequence samplers on the GPU (backend sampling): the same greedy text as the in-process
engine, batching across sequences with mixed samplers, and a single stream over loopback about
as fast as in-process (on the ``gpu_model``, the device recipe's synthetic small262k)."""

from __future__ import annotations

import statistics
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from llcuda_tui.core.engine import (
    Engine,
    EngineConfig,
    GenerationRequest,
    RunRecord,
    SamplingParams,
)
from llcuda_tui.core.worker.batch import BatchEngine
from llcuda_tui.core.worker.client import RemoteEngine

pytestmark = [pytest.mark.gpu, pytest.mark.timeout(300)]
GREEDY = SamplingParams(temperature=0.0)
PROMPTS = ["hello world", "the cat", "a dog . the world , hello"]


def _req(prompt: str, n: int = 48, **kw: object) -> GenerationRequest:
    return GenerationRequest(prompt=prompt, max_tokens=n, sampling=GREEDY, ignore_eos=True, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def gpu_cfg(tiny_gguf: Path) -> EngineConfig:
    return EngineConfig(tiny_gguf, n_gpu_layers=-1, n_ctx=1024, flash_attn="on")


@pytest.fixture(scope="module")
def expected(gpu_cfg: EngineConfig) -> list[str]:
    with Engine.load(gpu_cfg) as eng:
        assert eng.info.backend_sampling
        return [eng.generate(_req(p))[0] for p in PROMPTS]


@pytest.fixture(scope="module")
def batch(gpu_cfg: EngineConfig) -> Iterator[BatchEngine]:
    with BatchEngine.load(gpu_cfg, parallel=4) as eng:
        yield eng


def test_backend_sampling_is_on_and_greedy_text_matches(
    batch: BatchEngine, expected: list[str]
) -> None:
    assert batch.info.backend.startswith("CUDA0")
    assert batch.info.backend_sampling and batch.info.n_layers_offloaded == batch.info.n_layers
    for prompt, text in zip(PROMPTS, expected, strict=True):
        assert batch.generate(_req(prompt))[0] == text


def test_cpu_sampling_gives_the_same_greedy_text(
    gpu_cfg: EngineConfig, expected: list[str]
) -> None:
    with BatchEngine.load(replace(gpu_cfg, backend_sampling="off"), parallel=2) as eng:
        assert not eng.info.backend_sampling
        assert [eng.generate(_req(p))[0] for p in PROMPTS] == expected


def test_concurrent_sequences_share_steps_with_mixed_samplers(batch: BatchEngine) -> None:
    steps = batch.stats().steps
    sampled = SamplingParams(temperature=0.8, top_k=40, top_p=0.9, seed=7)
    penalised = SamplingParams(temperature=0.0, repeat_penalty=1.3)
    reqs = [
        _req(PROMPTS[0], 64),
        _req(PROMPTS[1], 64),
        replace(_req(PROMPTS[2], 64), sampling=sampled),
        replace(_req(PROMPTS[0], 64), sampling=penalised),
    ]
    records: list[RunRecord | None] = [None] * len(reqs)

    def run(i: int) -> None:
        records[i] = batch.generate(reqs[i])[1]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(reqs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.generated_tokens if r else None for r in records] == [64] * 4
    assert batch.stats().steps - steps < 2 * 64
    assert batch.stats().kv_cells_used == 0
    # the slots' GPU chains went back to greedy: the same text as before
    assert batch.generate(_req(PROMPTS[0]))[0] == batch.generate(_req(PROMPTS[0]))[0]


def test_a_gap_between_busy_slots_keeps_each_step_one_ubatch_on_the_gpu(
    gpu_cfg: EngineConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Split KV streams on CUDA with the samplers in the graph: slots 3 and 0 decode while
    2 and 1 are free, each decode step is one ubatch (the free slots get fillers, see
    test_batch_streams.py for the CPU), and the choices of one prompt share its stream."""
    from llcuda_tui.core.engine import capture_llama_log

    monkeypatch.setenv("LLAMA_BATCH_DEBUG", "1")  # read when the context is made
    log = capture_llama_log()
    prompts = [PROMPTS[0], PROMPTS[1], PROMPTS[2], "hello"]
    lengths = [32, 3, 3, 32]  # slots 3, 2, 1, 0: the middle two end first
    with BatchEngine.load(gpu_cfg, parallel=4) as eng:
        monkeypatch.delenv("LLAMA_BATCH_DEBUG")
        assert eng.info.backend_sampling and eng.n_ctx_total == 4 * 1024
        marks: list[tuple[int, int]] = []
        seen = [0]

        def first(chunk: object) -> None:  # on the engine thread, after its step's decode
            seen[0] += 1
            if seen[0] == 5:
                marks.append((log.mark(), eng.stats().steps))

        callbacks = [(first, None)] + [(lambda c: None, None)] * 3
        handles = eng.submit_many([_req(p, n) for p, n in zip(prompts, lengths, strict=True)],
                                  callbacks)  # type: ignore[arg-type]  # fmt: skip
        assert [h.result(60).generated_tokens for h in handles] == lengths
        stats = eng.stats()
        ((mark, steps),) = marks
        ubatches = sum("added ubatch" in line for _, line in log.since(mark))
        assert ubatches == stats.steps - steps > 0 and stats.filler_tokens >= 2 * ubatches
        shared = eng.submit_many([_req(PROMPTS[2], 16)] * 3, [(lambda c: None, None)] * 3)
        records = [h.result(60) for h in shared]
        assert [r.prompt_tokens_evaluated for r in records[1:]] == [1, 1]
        assert all(r.generated_tokens == 16 for r in records)


def test_single_stream_over_loopback_keeps_in_process_speed(
    gpu_model: Path, worker_process: type
) -> None:
    cfg = EngineConfig(gpu_model, n_gpu_layers=-1, n_ctx=1024, flash_attn="on")
    req = _req("Once upon a time", 256)
    with Engine.load(cfg) as eng:
        eng.generate(req)
        local = statistics.median(eng.generate(req)[1].decode_tokens_per_s for _ in range(3))
    w = worker_process.start("-m", str(gpu_model), "--ctx", "1024", "--parallel", "4",
                             "--fa", "on")  # fmt: skip
    with RemoteEngine.connect(w.url) as remote:
        remote.generate(req)
        remote_tps = statistics.median(
            remote.generate(req)[1].decode_tokens_per_s for _ in range(3)
        )
    # a 425M model decodes ~500 tokens/s, so per-token overhead weighs more than on the 8B
    # benchmark model (bench/worker_vs_llama_server.py checks the 0.95x there)
    assert remote_tps >= 0.85 * local, (remote_tps, local)
