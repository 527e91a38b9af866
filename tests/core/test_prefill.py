"""Prefill in chunks a cancel can land between, and its progress, on the starter models (CPU):
the chunk plan's rules, progress events rising to the total, a cancel from the first event
stopping after one chunk (in process and through the engine process), and greedy output
token for token the same as with n_batch chunks."""

from __future__ import annotations

from pathlib import Path

import pytest

from llcuda_tui.core.engine import (
    Chunk,
    Engine,
    EngineConfig,
    GenerationHandle,
    GenerationRequest,
    PrefillPlan,
    PrefillProgress,
    ProcessEngine,
    SamplingParams,
)
from llcuda_tui.core.engine._prefill import FIRST_CHUNK
from llcuda_tui.core.engine._prefix import KEEP_ALIGN
from llcuda_tui.core.errors import UserInputError

GREEDY = SamplingParams(temperature=0.0)
LONG_PROMPT = "Summarize this: " + "the river carries stones down to the sea, " * 122
"""About 1,100 tokens on SmolLM2 (the prefill Esc took 6.6 s to stop during)."""
pytestmark = pytest.mark.timeout(240)


def _request(prompt: str = LONG_PROMPT, **kw: object) -> GenerationRequest:
    return GenerationRequest(
        prompt=prompt,
        max_tokens=4,
        sampling=GREEDY,
        prefill_progress=True,
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def smollm(smollm_path: Path, cpu_threads: int):
    with Engine.load(EngineConfig(smollm_path, n_ctx=2048, n_threads=cpu_threads)) as eng:
        yield eng


# --- the plan ---------------------------------------------------------------------------------


def test_timed_chunks_start_small_grow_at_most_twofold_and_end_aligned() -> None:
    plan = PrefillPlan(512, 0.25)
    assert plan.end(0, 1100) == FIRST_CHUNK
    plan.took(FIRST_CHUNK, 0.001)  # very fast: may grow, but only twofold
    assert plan.size == 2 * FIRST_CHUNK
    for _ in range(10):
        plan.took(plan.size, 0.001)
    assert plan.size == 512  # never past n_batch
    plan.took(512, 4.0)  # 128 tokens/s: 0.25 s is 32 tokens
    assert plan.size == KEEP_ALIGN
    plan.took(32, 0.1)  # 320 tokens/s: 80 tokens fit, rounded down to 64
    assert plan.size == 64
    # a chunk that starts off the alignment (a restored state's length) ends on it
    assert plan.end(40, 1100) == 96
    assert plan.end(1090, 1100) == 1100  # the prompt's last chunk ends where the prompt does
    assert plan.end(0, 1100, room=40) == 32  # in a batch with little room: still aligned
    assert plan.end(5, 1100, room=20) == 25  # no aligned end fits: what fits, not nothing


def test_untimed_chunks_are_n_batch_as_before() -> None:
    plan = PrefillPlan(512, None)
    assert plan.end(0, 1100) == 512 and plan.end(512, 1100) == 1024
    plan.took(512, 10.0)
    assert plan.end(1024, 1100) == 1100
    small = PrefillPlan(16, 0.25)  # an n_batch below the alignment is kept as chosen
    assert small.end(0, 100) == 16


def test_bad_chunk_time_is_refused(smollm_path: Path) -> None:
    with pytest.raises(UserInputError, match="prefill_chunk_s"):
        EngineConfig(smollm_path, prefill_chunk_s=0).validate()


# --- the engine ---------------------------------------------------------------------------------


def _progress_of(chunks: list[Chunk]) -> list[PrefillProgress]:
    return [c.prefill for c in chunks if c.prefill is not None]


def test_progress_rises_to_the_total_then_tokens_stream(smollm: Engine) -> None:
    chunks = list(smollm.stream(_request(cache_prompt=False)))
    record = chunks[-1].record
    assert record is not None and record.generated_tokens == 4
    progress = _progress_of(chunks)
    total = record.prompt_tokens
    assert total > 1000
    dones = [p.done for p in progress]
    assert dones[0] == 0 and dones[-1] == total and dones == sorted(set(dones))
    assert len(dones) > 1 + total // 512  # smaller chunks than n_batch on the CPU
    assert all(p.total == total and p.cached == 0 for p in progress)
    # every progress chunk comes before the first token and is not one
    first_token = next(i for i, c in enumerate(chunks) if c.prefill is None)
    assert all(c.prefill is None for c in chunks[first_token:])
    assert all(c.text == "" for c in chunks[:first_token])
    # a request that did not ask hears no progress (chunk-counting consumers are unchanged)
    plain = list(
        smollm.stream(GenerationRequest(prompt=LONG_PROMPT, max_tokens=2, ignore_eos=True))
    )
    assert not _progress_of(plain) and len(plain) == 3


def test_progress_counts_the_cached_prefix(smollm: Engine) -> None:
    smollm.generate(_request())
    progress = _progress_of(list(smollm.stream(_request(LONG_PROMPT + " And then:"))))
    cached = progress[0].cached
    assert cached > 1000 and cached % KEEP_ALIGN == 0
    assert progress[0].done == cached and progress[-1].done == progress[-1].total


def _cancel_at_first_chunk(submit, request: GenerationRequest) -> tuple[GenerationHandle, int]:
    """Submit ``request`` and cancel it from its first progress event past the cached prefix
    (on the engine's side of the callback: no clock involved); the handle and the prompt
    tokens done when the cancel went."""
    at_cancel: list[int] = []
    holder: list[GenerationHandle] = []

    def on_chunk(chunk: Chunk) -> None:
        p = chunk.prefill
        if p is not None and p.done > p.cached and not at_cancel:
            at_cancel.append(p.done)
            holder[0].cancel()

    holder.append(submit(request, on_chunk, None))
    record = holder[0].result(120)
    assert at_cancel and record.stop_reason == "cancelled"
    return holder[0], at_cancel[0]


def test_cancel_during_prefill_stops_after_the_chunk_in_flight(smollm: Engine) -> None:
    handle, at_cancel = _cancel_at_first_chunk(smollm.submit, _request(cache_prompt=False))
    record = handle.result()
    assert record.generated_tokens == 0
    # it stopped where the cancel came: after the first chunk, far short of the prompt
    assert record.prompt_tokens_evaluated == at_cancel == FIRST_CHUNK
    assert record.prompt_tokens_evaluated < record.prompt_tokens
    # the engine is fine afterwards: the same prompt runs to its end
    _, again = smollm.generate(_request(cache_prompt=False))
    assert again.stop_reason == "length" and again.generated_tokens == 4


def test_cancel_during_prefill_through_the_engine_process(
    smollm_path: Path, cpu_threads: int
) -> None:
    cfg = EngineConfig(smollm_path, n_ctx=2048, n_threads=cpu_threads)
    with ProcessEngine.load(cfg) as child:
        chunks = list(child.stream(_request(LONG_PROMPT[:1200], cache_prompt=False)))
        progress = _progress_of(chunks)
        n_short = chunks[-1].record.prompt_tokens  # type: ignore[union-attr]
        assert [p.done for p in progress][-1] == n_short and len(progress) > 2
        assert [p.done for p in progress] == sorted({p.done for p in progress})
        handle, at_cancel = _cancel_at_first_chunk(child.submit, _request(cache_prompt=False))
        record = handle.result()
    assert at_cancel == FIRST_CHUNK and record.generated_tokens == 0
    # the cancel crossed the pipe while the child decoded on: it stopped chunks later at
    # most, mid-prefill (how many depends on the machine's load, so no tighter bound)
    assert at_cancel <= record.prompt_tokens_evaluated < record.prompt_tokens


@pytest.mark.parametrize("model", ["smollm", "gemma"])
def test_greedy_output_is_the_same_as_with_n_batch_chunks(
    model: str, smollm_path: Path, gemma_path: Path, cpu_threads: int
) -> None:
    path = smollm_path if model == "smollm" else gemma_path
    prompt = "Continue the story: " + "a fox ran over the hill and " * 90  # ~640 tokens
    req = GenerationRequest(
        prompt=prompt, max_tokens=12, sampling=GREEDY, ignore_eos=True, cache_prompt=False
    )
    outputs = []
    for chunk_s in (None, 0.25, 1e-6):  # n_batch chunks; timed; always the smallest
        cfg = EngineConfig(path, n_ctx=1024, n_threads=cpu_threads, prefill_chunk_s=chunk_s)
        with Engine.load(cfg) as eng:
            text, record = eng.generate(req)
            assert record.prompt_tokens > 512
            outputs.append(text)
    assert outputs[0] == outputs[1] == outputs[2] and outputs[0].strip()
