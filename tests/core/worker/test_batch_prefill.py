"""The batched engine's prefill in timed steps (CPU): per-sequence progress, and a cancel of
one sequence between its prompt chunks that leaves the other's output as it is alone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from llcuda_tui.core.engine import (
    Chunk,
    Engine,
    EngineConfig,
    GenerationHandle,
    GenerationRequest,
    PrefillProgress,
    SamplingParams,
)
from llcuda_tui.core.engine._prefill import FIRST_CHUNK
from llcuda_tui.core.worker.batch import BatchEngine

pytestmark = pytest.mark.timeout(120)
LONG = "hello world the cat a dog . " * 10
"""A few hundred tokens of the tiny model's vocabulary: several prompt steps."""


def _req(prompt: str, **kw: object) -> GenerationRequest:
    return GenerationRequest(
        prompt=prompt, max_tokens=16, sampling=SamplingParams(temperature=0.0),
        ignore_eos=True, prefill_progress=True, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


@pytest.fixture()
def batch(tiny_gguf: Path) -> Iterator[BatchEngine]:
    """A fresh engine: its first prompt step is FIRST_CHUNK tokens (the plan starts small)."""
    with BatchEngine.load(EngineConfig(tiny_gguf, n_ctx=512, n_threads=1), parallel=2) as eng:
        yield eng


def test_each_sequence_hears_its_own_progress(batch: BatchEngine) -> None:
    chunks = list(batch.stream(_req(LONG)))
    record = chunks[-1].record
    assert record is not None and record.generated_tokens == 16
    progress = [c.prefill for c in chunks if c.prefill is not None]
    dones = [p.done for p in progress]
    assert record.prompt_tokens > 4 * FIRST_CHUNK
    assert dones[0] == 0 and dones[-1] == record.prompt_tokens and dones == sorted(set(dones))
    assert dones[1] == FIRST_CHUNK  # the first step took a small chunk
    first_token = next(i for i, c in enumerate(chunks) if c.prefill is None)
    assert all(c.prefill is None for c in chunks[first_token:])
    # without asking: no progress chunks (the worker's streams count chunks as tokens)
    plain = list(batch.stream(GenerationRequest(prompt=LONG, max_tokens=4, ignore_eos=True)))
    assert len(plain) == 5


def test_cancel_of_one_mid_prefill_leaves_the_other_as_alone(
    batch: BatchEngine, tiny_gguf: Path
) -> None:
    other_prompt = "a dog . the world , hello " * 4
    # alone: in process (the batch engine's plan stays fresh: its first steps are small)
    with Engine.load(EngineConfig(tiny_gguf, n_ctx=512, n_threads=1)) as solo:
        alone, _ = solo.generate(_req(other_prompt))
    parts: list[str] = []
    cancelled: list[GenerationHandle] = []
    at_cancel: list[PrefillProgress] = []

    def on_cancelled_chunk(chunk: Chunk) -> None:
        p = chunk.prefill
        if p is not None and p.done > 0 and not at_cancel:
            at_cancel.append(p)
            cancelled[0].cancel()  # on the engine thread: lands before the next step

    def on_other_chunk(chunk: Chunk) -> None:
        if chunk.prefill is None:
            parts.append(chunk.text)
        elif not cancelled:  # join while the other still prefills: they share steps
            cancelled.append(batch.submit(_req(LONG), on_cancelled_chunk, None))

    other = batch.submit(_req(other_prompt), on_other_chunk, None)
    other_record = other.result(60)
    record = cancelled[0].result(60)
    assert record.stop_reason == "cancelled" and record.generated_tokens == 0
    # it stopped between its prompt chunks, where the cancel came
    assert at_cancel and record.prompt_tokens_evaluated == at_cancel[0].done
    assert 0 < record.prompt_tokens_evaluated < record.prompt_tokens
    assert "".join(parts) == alone and other_record.generated_tokens == 16
    stats = batch.stats()
    assert (stats.active, stats.kv_cells_used) == (0, 0)
