"""Speculation in the batch engine on the tiny random model (CPU, fast): more sequences than
slots, each greedy reply equal to the in-process one, the model drafting for itself accepts
every draft (its draft sequences are reused slot by slot), sampling / logprob / opted-out
requests decode without drafts beside speculating ones, and a cancel ends one that drafts."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from llcuda_tui.core.engine import (
    Chunk,
    Engine,
    EngineConfig,
    GenerationRequest,
    SamplingParams,
    SpecSettings,
)
from llcuda_tui.core.worker.batch import BatchEngine

pytestmark = pytest.mark.timeout(120)
GREEDY = SamplingParams(temperature=0.0)
PROMPTS = ["hello world the cat", "a dog . the world , hello", "the cat the cat", "hello", "dog"]


def _req(prompt: str, n: int = 60, **kw: object) -> GenerationRequest:
    kw.setdefault("sampling", GREEDY)
    return GenerationRequest(prompt=prompt, max_tokens=n, ignore_eos=True, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def plain(tiny_gguf: Path) -> list[str]:
    with Engine.load(EngineConfig(tiny_gguf, n_ctx=512, n_threads=1)) as eng:
        return [eng.generate(_req(p))[0] for p in PROMPTS]


@pytest.fixture(scope="module")
def drafting(tiny_gguf: Path) -> Iterator[BatchEngine]:
    """The tiny model drafting for itself, 2 slots."""
    spec = SpecSettings(mode="draft", draft_model=tiny_gguf, draft_max=6)
    cfg = EngineConfig(tiny_gguf, n_ctx=512, n_threads=1, speculative=spec)
    with BatchEngine.load(cfg, parallel=2) as eng:
        yield eng


def _all_at_once(eng: BatchEngine, requests: list[GenerationRequest]) -> list[tuple[str, object]]:
    parts: list[list[str]] = [[] for _ in requests]
    handles = [
        eng.submit(r, lambda c, i=i: parts[i].append(c.text)) for i, r in enumerate(requests)
    ]
    records = [h.result(100) for h in handles]
    return [("".join(p), r) for p, r in zip(parts, records, strict=True)]


def test_drafted_replies_equal_in_process_ones_across_slots(
    drafting: BatchEngine, plain: list[str]
) -> None:
    replies = _all_at_once(drafting, [_req(p) for p in PROMPTS])  # 5 requests, 2 slots
    assert [text for text, _ in replies] == plain
    for _, record in replies:
        assert record.spec_mode == "draft"  # type: ignore[attr-defined]
        # the same weights draft and verify: every draft is accepted, and the adaptive
        # length grows, so most tokens come from drafts
        assert record.accepted_tokens == record.drafted_tokens > 30  # type: ignore[attr-defined]
    assert drafting.stats().active == 0 and drafting.stats().kv_cells_used == 0


def test_requests_that_cannot_speculate_decode_beside_ones_that_do(
    drafting: BatchEngine, plain: list[str]
) -> None:
    sampled = GenerationRequest(
        prompt=PROMPTS[1], max_tokens=60, ignore_eos=True,
        sampling=SamplingParams(temperature=0.8, seed=7),
    )  # fmt: skip
    requests = [
        _req(PROMPTS[0]),
        sampled,
        _req(PROMPTS[2], logprobs=2),
        _req(PROMPTS[3], speculative=False),
        _req(PROMPTS[4], sampling=SamplingParams(temperature=0.0, repeat_penalty=1.3)),
    ]
    replies = _all_at_once(drafting, requests)
    assert replies[0][0] == plain[0] and replies[0][1].drafted_tokens > 0  # type: ignore[attr-defined]
    for _, record in replies[1:]:
        assert record.drafted_tokens == 0 and record.spec_mode == ""  # type: ignore[attr-defined]
        assert record.generated_tokens == 60  # type: ignore[attr-defined]
    assert replies[2][0] == plain[2] and replies[3][0] == plain[3]
    # the sampled one follows its seed as without speculation
    assert replies[1][0] == _all_at_once(drafting, [sampled])[0][0]


def test_cancel_ends_a_speculating_request(drafting: BatchEngine, plain: list[str]) -> None:
    seen = threading.Event()
    chunks: list[Chunk] = []

    def on_chunk(chunk: Chunk) -> None:
        chunks.append(chunk)
        if len(chunks) == 5:
            handle.cancel()
            seen.set()

    handle = drafting.submit(_req(PROMPTS[0], n=400), on_chunk)
    record = handle.result(100)
    assert seen.is_set() and record.stop_reason == "cancelled"
    # what that step verified may still come out, no more
    assert record.generated_tokens <= 5 + 6
    assert drafting.stats().active == 0
    assert drafting.generate(_req(PROMPTS[0]))[0] == plain[0]  # the slot decodes right after


def test_rejected_prompt_lookup_drafts_are_taken_back(tiny_gguf: Path) -> None:
    # 200 tokens: the random model repeats a few n-grams, so prompt lookup drafts, and nearly
    # every draft is wrong: the reply is still the plain one. (PROMPTS[2] is left out: near
    # its 150th token two logits are so close that 3 slots round them differently without
    # speculation too.)
    prompts = [p for i, p in enumerate(PROMPTS) if i != 2]
    spec = SpecSettings(mode="ngram", draft_max=6, adaptive=False)
    cfg = EngineConfig(tiny_gguf, n_ctx=512, n_threads=1, speculative=spec)
    with BatchEngine.load(cfg, parallel=3) as eng:
        replies = _all_at_once(eng, [_req(p, n=200) for p in prompts])
    with Engine.load(EngineConfig(tiny_gguf, n_ctx=512, n_threads=1)) as solo:
        want = [solo.generate(_req(p, n=200))[0] for p in prompts]
    assert [text for text, _ in replies] == want
    records = [r for _, r in replies]
    drafted = sum(r.drafted_tokens for r in records)  # type: ignore[attr-defined]
    assert drafted > sum(r.accepted_tokens for r in records)  # type: ignore[attr-defined]


def test_an_always_rejected_draft_model_stays_backed_off_for_later_requests(
    tiny_gguf: Path, plain: list[str], tmp_path: Path
) -> None:
    # another random model on the same vocabulary: its drafts are rejected. The first
    # request learns that; the next ones start from it (the draft model's acceptance is the
    # engine's), so they only probe now and then instead of drafting from a hopeful start
    from tests.gguf_factory import write_tiny_llama

    other = write_tiny_llama(tmp_path / "other.gguf", seed=7)
    spec = SpecSettings(mode="draft", draft_model=other, draft_max=6)
    cfg = EngineConfig(tiny_gguf, n_ctx=512, n_threads=1, speculative=spec)
    with BatchEngine.load(cfg, parallel=1) as eng:
        replies = [_all_at_once(eng, [_req(p)])[0] for p in PROMPTS]
    assert [text for text, _ in replies] == plain
    drafted = [r.drafted_tokens for _, r in replies]  # type: ignore[attr-defined]
    # the first request drafts until its estimate falls; the later ones start backed off
    # (each drafted as much as the first when they started afresh)
    assert drafted[0] >= 2 and sum(drafted[1:]) < drafted[0], drafted
