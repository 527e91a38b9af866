"""The batch engine's KV stream per slot (llama.cpp's ``kv_unified`` off), on real models on
the CPU: each slot holds its whole context, a step stays one ubatch whatever slots are busy,
shared prompts and batched sequences give the in-process engine's greedy text, and so does
the prefix cache across slots (which one unified stream did not: smollm2's text changed)."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from llcuda_tui.core.engine import (
    Engine,
    EngineConfig,
    GenerationRequest,
    SamplingParams,
    SpecSettings,
    capture_llama_log,
)
from llcuda_tui.core.fit import context_cells
from llcuda_tui.core.worker.batch import BatchEngine

GREEDY = SamplingParams(temperature=0.0)
pytestmark = pytest.mark.timeout(300)


def _req(tokens: Sequence[int], n: int = 24, **kw: Any) -> GenerationRequest:
    return GenerationRequest(
        tokens=list(tokens), max_tokens=n, sampling=GREEDY, ignore_eos=True, **kw
    )


def _together(eng: BatchEngine, requests: list[GenerationRequest]) -> list[tuple[str, Any]]:
    """The replies of ``requests`` submitted as one group (``submit_many``: admitted in one
    pass, equal prompts share the first one's cells)."""
    parts: list[list[str]] = [[] for _ in requests]
    callbacks = [(lambda c, i=i: parts[i].append(c.text), None) for i in range(len(requests))]
    handles = eng.submit_many(requests, callbacks)  # type: ignore[arg-type]
    records = [h.result(120) for h in handles]
    return [("".join(p), r) for p, r in zip(parts, records, strict=True)]


class _Cold:
    """Greedy replies of the in-process engine, prompt cache off (each prompt from scratch)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.seen: dict[tuple[tuple[int, ...], int], str] = {}

    def __call__(self, tokens: Sequence[int], n: int = 24) -> str:
        key = (tuple(tokens), n)
        if key not in self.seen:
            self.seen[key] = self.engine.generate(_req(tokens, n, cache_prompt=False))[0]
        return self.seen[key]


@pytest.fixture(scope="module")
def tiny_cfg(tiny_gguf: Path) -> EngineConfig:
    return EngineConfig(tiny_gguf, n_ctx=300, n_threads=1)


@pytest.fixture(scope="module")
def tiny_cold(tiny_cfg: EngineConfig) -> Iterator[_Cold]:
    with Engine.load(tiny_cfg) as eng:
        yield _Cold(eng)


@pytest.fixture(scope="module")
def smollm_cfg(smollm_path: Path, cpu_threads: int) -> EngineConfig:
    return EngineConfig(smollm_path, n_ctx=512, n_threads=cpu_threads)


@pytest.fixture(scope="module")
def smollm_cold(smollm_cfg: EngineConfig) -> Iterator[_Cold]:
    with Engine.load(smollm_cfg) as eng:
        yield _Cold(eng)


def _tokens(rng: random.Random, n: int, lo: int = 10, hi: int = 250) -> list[int]:
    return [rng.randrange(lo, hi) for _ in range(n)]


def test_each_slot_has_a_stream_of_its_whole_context(tiny_cfg: EngineConfig) -> None:
    """llama.cpp pads each stream's share (300 x 3: 1536 cells, 1024 in one stream); three
    sequences that each run to the end of the context at once all get there."""
    with BatchEngine.load(tiny_cfg, parallel=3) as eng:
        assert eng.n_ctx_total == context_cells(900, 3, unified=False) == 1536
        rng = random.Random(1)
        handles = [eng.submit(_req(_tokens(rng, 10), 10_000), lambda c: None) for _ in range(3)]
        for h in handles:
            rec = h.result(120)
            assert rec.stop_reason == "length"
            assert rec.prompt_tokens + rec.generated_tokens == 300
    spec = SpecSettings(mode="ngram")  # verify steps need one stream (splits_kv)
    with BatchEngine.load(replace(tiny_cfg, speculative=spec), parallel=3) as eng:
        assert eng.n_ctx_total == context_cells(900) == 1024


@pytest.mark.parametrize("backend_sampling", ["off", "on"])
def test_a_gap_between_busy_slots_keeps_each_step_one_ubatch(
    tiny_cfg: EngineConfig,
    tiny_cold: _Cold,
    monkeypatch: pytest.MonkeyPatch,
    backend_sampling: str,
) -> None:
    """Slots 3 and 0 decode while 2 and 1 are free: llama.cpp takes only consecutive
    sequence ids into a ubatch, so the free ones get a filler token each, and every decode
    step is one graph run (LLAMA_BATCH_DEBUG logs each ubatch); the replies are the
    in-process engine's, with the samplers in the graph too (the GPU's way; the free slots'
    chains have no row to sample). (A filler's cell left behind would make the next step's
    filler at the same position a decode error: llama.cpp wants each sequence's positions
    to follow on from its cells.)"""
    monkeypatch.setenv("LLAMA_BATCH_DEBUG", "1")  # read when the context is made
    log = capture_llama_log()
    rng = random.Random(2)
    prompts = [_tokens(rng, 6) for _ in range(4)]
    lengths = [16, 3, 3, 16]  # slots 3, 2, 1, 0 (the free list's order): the middle end first
    requests = [_req(p, n) for p, n in zip(prompts, lengths, strict=True)]
    cfg = replace(tiny_cfg, backend_sampling=backend_sampling)  # type: ignore[arg-type]
    with BatchEngine.load(cfg, parallel=4) as eng:
        monkeypatch.delenv("LLAMA_BATCH_DEBUG")
        assert eng.info.backend_sampling is (backend_sampling == "on")
        marks: list[tuple[int, int]] = []
        parts: list[list[str]] = [[] for _ in requests]

        def first(chunk: Any) -> None:  # on the engine thread, after its step's decode
            parts[0].append(chunk.text)
            if len(parts[0]) == 5:  # the short ones are done: only slots 3 and 0 decode
                marks.append((log.mark(), eng.stats().steps))

        callbacks = [(first, None)] + [
            (lambda c, i=i: parts[i].append(c.text), None) for i in range(1, len(requests))
        ]
        for h in eng.submit_many(requests, callbacks):  # type: ignore[arg-type]
            h.result(60)
        stats = eng.stats()
    assert ["".join(p) for p in parts] == [
        tiny_cold(p, n) for p, n in zip(prompts, lengths, strict=True)
    ]
    ((mark, steps),) = marks
    ubatches = sum("added ubatch" in line for _, line in log.since(mark))
    assert ubatches == stats.steps - steps > 0
    assert stats.filler_tokens >= 2 * ubatches  # two free slots between 3 and 0


def test_a_new_prompt_fills_a_gap_between_busy_slots(
    tiny_cfg: EngineConfig, tiny_cold: _Cold
) -> None:
    """Four prompts on an idle engine of 6 slots take slots side by side (5, 4, 3, 2); when
    the one in 4 ends, a prompt that shares nothing with any slot takes slot 4 (not the
    least recently used 1 or 0, which would leave a gap): no step needs a filler."""
    rng = random.Random(6)
    prompts = [_tokens(rng, 8) for _ in range(5)]
    lengths = [24, 3, 24, 24, 24]  # the last outlasts the others: no gap when it ends
    parts: list[list[str]] = [[] for _ in prompts]
    late: list[Any] = []
    with BatchEngine.load(tiny_cfg, parallel=6) as eng:

        def short(chunk: Any) -> None:
            parts[1].append(chunk.text)
            if chunk.record is not None:  # it ends: the next one comes before the next step
                late.append(eng.submit(_req(prompts[4], 24), lambda c: parts[4].append(c.text)))

        callbacks: list[tuple[Any, Any]] = [
            (lambda c, i=i: parts[i].append(c.text), None) for i in range(4)
        ]
        callbacks[1] = (short, None)
        requests = [_req(p, n) for p, n in zip(prompts[:4], lengths, strict=False)]
        for h in eng.submit_many(requests, callbacks):
            h.result(60)
        late[0].result(60)
        assert eng.stats().filler_tokens == 0
    want = [tiny_cold(p, n) for p, n in zip(prompts, lengths, strict=True)]
    assert ["".join(p) for p in parts] == want


def test_shared_and_batched_prompts_give_in_process_text(
    tiny_cfg: EngineConfig, tiny_cold: _Cold
) -> None:
    """The choices of one prompt (the first prefills; each other one takes a copy of its
    stream and decodes the last prompt token itself) beside a different prompt, then the
    same with the slots' prefix caches in play and a prompt joining while the others decode
    (free slots between them get fillers): token for token the in-process engine's text.
    (The tiny model: on the CPU smollm2's text depends on where a prompt's rows fall in a
    ubatch, see BatchEngine._lay_out_by_slot; alone or cached it does not, see below.)"""
    rng = random.Random(3)
    shared, other, late = (_tokens(rng, n) for n in (80, 50, 40))
    with BatchEngine.load(tiny_cfg, parallel=4) as eng:
        requests = [_req(shared), _req(shared), _req(other), _req(shared)]
        got = _together(eng, requests)
        assert [t for t, _ in got] == [tiny_cold(r.tokens) for r in requests]  # type: ignore[arg-type]
        cached = [r.prompt_tokens_cached for _, r in got]
        assert cached[1] == cached[3] == len(shared) - 1 and cached[2] == 0
        requests = [_req(other), _req(shared, 4), _req(shared), _req(late)]
        parts: list[list[str]] = [[] for _ in requests]
        joined: list[Any] = []

        def first(chunk: Any) -> None:
            parts[0].append(chunk.text)
            if not joined:  # at the first token: its prefill goes in beside the decoding
                joined.append(eng.submit(requests[3], lambda c: parts[3].append(c.text)))

        callbacks = [(first, None)] + [
            (lambda c, i=i: parts[i].append(c.text), None) for i in (1, 2)
        ]
        handles = eng.submit_many(requests[:3], callbacks)  # type: ignore[arg-type]
        for h in [*handles, *joined]:
            h.result(120)
        want = [tiny_cold(r.tokens, r.max_tokens) for r in requests]  # type: ignore[arg-type]
        assert ["".join(p) for p in parts] == want
        assert eng.stats().filler_tokens > 0


@pytest.mark.parametrize("which", ["smollm", "tiny"])
def test_prefix_cache_across_slots_gives_cold_text(
    which: str, request: pytest.FixtureRequest
) -> None:
    """One request at a time on 2 slots: cold prompts beside the other slot's kept cells,
    then prompts that extend a cached one, leave it mid-way, are a prefix of it or equal to
    it: each reply is the in-process engine's from an empty cache, and the cache was used.
    With one unified stream smollm2 failed this (the cached prompts and a cold one after
    them gave other text). Then, on the tiny model, several at once on different slots'
    prefixes."""
    cfg: EngineConfig = request.getfixturevalue(f"{which}_cfg")
    cold: _Cold = request.getfixturevalue(f"{which}_cold")
    lo, hi = (300, 2000) if which == "smollm" else (10, 250)
    rng = random.Random(4)
    base = _tokens(rng, 150, lo, hi)
    others = [_tokens(rng, n, lo, hi) for n in (100, 120, 80, 60)]
    again, extended = others[0] + _tokens(rng, 20, lo, hi), others[1] + _tokens(rng, 10, lo, hi)
    longer = extended + _tokens(rng, 15, lo, hi)
    one_by_one = [
        base, *others,  # cold, each beside the other slot's kept cells
        base + _tokens(rng, 30, lo, hi),  # cold too: base's slot has been taken since
        base[:90] + _tokens(rng, 40, lo, hi),  # leaves the cached one mid-way
        base[:70],  # a prefix of it
        base,  # equal to it
        again,  # cold
        extended,  # cold
        longer,  # extends the cached one
    ]  # fmt: skip
    with BatchEngine.load(cfg, parallel=2) as eng:
        cached = []
        for tokens in one_by_one:
            text, rec = eng.generate(_req(tokens))
            assert text == cold(tokens)
            cached.append(rec.prompt_tokens_cached)
        assert cached[:6] == [0] * 6 and cached[9:11] == [0, 0]
        assert min(cached[6:9]) >= 64 and cached[11] >= 128
        if which != "tiny":
            return
        # the slots hold again's and longer's cells; the third waits for a slot
        at_once = [again + _tokens(rng, 9, lo, hi), longer + _tokens(rng, 5, lo, hi)]
        at_once += [_tokens(rng, 40, lo, hi)]
        got = _together(eng, [_req(t) for t in at_once])
        assert [t for t, _ in got] == [cold(t) for t in at_once]
        assert min(r.prompt_tokens_cached for _, r in got[:2]) >= 32


def test_a_queued_stream_copy_is_not_overwritten_by_a_restored_state(
    tiny_cfg: EngineConfig, tiny_cold: _Cold, tmp_path: Path
) -> None:
    """The copy of a shared prompt's stream happens at the next llama_decode: a request
    admitted before it into the first choice's slot (that choice wanted one token) must not
    restore a saved state there (it would be what the copy reads); it prefills, and the
    other choice's reply is the in-process one."""
    cfg = replace(tiny_cfg, kv_state_dir=tmp_path, model_sha256="k" * 64)
    rng = random.Random(5)
    shared, saved = _tokens(rng, 40), _tokens(rng, 100)
    with BatchEngine.load(cfg, parallel=2) as eng:  # closing saves the slot's conversation
        eng.generate(_req(saved, 4))
    assert any(tmp_path.iterdir())
    with BatchEngine.load(cfg, parallel=2) as eng:
        # admitted in one pass: the first two take the slots, the third waits for one
        got = _together(eng, [_req(shared, 1), _req(shared, 16), _req(saved, 4)])
        assert got[1][0] == tiny_cold(shared, 16)
        assert got[2][0] == tiny_cold(saved, 4)
        assert got[2][1].prompt_tokens_cached == 0  # no restore while the copy waited
