"""The batched engine on real models (CPU): same text as in-process, one decode for many
sequences, slots freed at once, bad requests refused at submit."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from llcuda_tui.core.engine import (
    Chunk,
    Engine,
    EngineConfig,
    GenerationHandle,
    GenerationRequest,
    SamplingParams,
)
from llcuda_tui.core.errors import UserInputError
from llcuda_tui.core.worker.batch import BatchEngine

GREEDY = SamplingParams(temperature=0.0)
pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def tiny_cfg(tiny_gguf: Path) -> EngineConfig:
    return EngineConfig(tiny_gguf, n_ctx=512, n_threads=1)


@pytest.fixture(scope="module")
def batch(tiny_cfg: EngineConfig) -> Iterator[BatchEngine]:
    with BatchEngine.load(tiny_cfg, parallel=3) as eng:
        yield eng


@pytest.fixture(scope="module")
def solo(tiny_cfg: EngineConfig) -> Iterator[Engine]:
    with Engine.load(tiny_cfg) as eng:
        yield eng


def _req(prompt: str, n: int = 24, **kw: object) -> GenerationRequest:
    return GenerationRequest(prompt=prompt, max_tokens=n, sampling=GREEDY, **kw)  # type: ignore[arg-type]


def test_load_reports_slots_and_per_sequence_context(batch: BatchEngine) -> None:
    assert batch.parallel == 3
    assert batch.info.n_ctx == 512
    assert batch.n_ctx_total >= 512 * 3
    assert batch.info.backend == "CPU" and not batch.info.backend_sampling
    assert batch.stats().active == 0 and batch.stats().kv_cells_used == 0


def test_greedy_equals_in_process_alone_and_together(batch: BatchEngine, solo: Engine) -> None:
    prompts = ["hello world", "the cat", "a dog . the world , hello"]
    expected = [solo.generate(_req(p)) for p in prompts]
    for p, (text, rec) in zip(prompts, expected, strict=True):
        got, got_rec = batch.generate(_req(p))
        assert got == text
        assert got_rec.generated_tokens == rec.generated_tokens
        assert got_rec.stop_reason == rec.stop_reason
        assert got_rec.prompt_tokens == rec.prompt_tokens
    steps = batch.stats().steps
    # The second and third requests are submitted from the first one's first token (on the
    # engine thread), so they join it while it still has 23 tokens to go, however fast or
    # loaded the machine is (submitted back to back from a test thread, the tiny model
    # could finish the first before the next arrived: 48 steps on a fresh CI clone).
    parts: list[list[str]] = [[], [], []]
    later: list[GenerationHandle] = []

    def first_chunk(chunk: Chunk) -> None:
        parts[0].append(chunk.text)
        if not later:
            later.extend(
                batch.submit(_req(p), lambda c, i=i: parts[i].append(c.text), None)
                for i, p in enumerate(prompts[1:], 1)
            )

    first = batch.submit(_req(prompts[0]), first_chunk, None)
    first.result(60)
    assert len(later) == 2
    for h in later:
        h.result(60)
    assert ["".join(x) for x in parts] == [e[0] for e in expected]
    # three sequences of 24 tokens shared their decode steps
    assert batch.stats().steps - steps < 2 * 24


def test_stop_strings_and_eos_as_in_process(batch: BatchEngine, solo: Engine) -> None:
    base, _ = solo.generate(_req("hello world", 40))
    stop = base[10:14]
    req = _req("hello world", 40, stop=[stop])
    text, rec = solo.generate(req)
    got, got_rec = batch.generate(req)
    assert (
        (got, got_rec.stop_reason) == (text, rec.stop_reason) == (base[: base.index(stop)], "stop")
    )


def test_pieces_of_characters_come_out_as_in_process(batch: BatchEngine, solo: Engine) -> None:
    # byte tokens <0xC3> <0xA9> (the halves of "é") drawn among whole words, so characters
    # arrive split over tokens, a half is followed by a word, and words come while nothing is
    # pending: each chunk's text must be the in-process engine's, which decodes every piece
    # through its incremental decoder (the batch engine takes a whole piece's text as is)
    hello, c3, a9 = 259, 3 + 0xC3, 3 + 0xA9
    bias = {hello: 40.0, c3: 40.0, a9: 44.0}
    for seed, stop in ((7, []), (11, []), (11, ["é"])):
        sampling = SamplingParams(temperature=1.5, seed=seed, logit_bias=bias)
        req = GenerationRequest(
            prompt="the cat", max_tokens=48, sampling=sampling, ignore_eos=True, stop=stop
        )
        want = [c.text for c in solo.stream(req)]
        got = [c.text for c in batch.stream(req)]
        assert got == want
        text = "".join(got)
        if not stop:  # whole characters, lone halves and words all came up
            assert "é" in text and "\ufffd" in text and "hello" in text
        else:
            assert text and "é" not in text


def test_length_is_capped_by_the_sequence_context(batch: BatchEngine) -> None:
    req = GenerationRequest(prompt="hello", max_tokens=100_000, sampling=GREEDY, ignore_eos=True)
    _, rec = batch.generate(req)
    assert rec.stop_reason == "length"
    assert rec.prompt_tokens + rec.generated_tokens == batch.info.n_ctx
    assert batch.stats().kv_cells_used == 0


def test_more_requests_than_slots_queue_and_all_finish(batch: BatchEngine) -> None:
    active_seen = []
    handles = [batch.submit(_req(f"hello w{i}", 16), lambda c: None) for i in range(8)]
    while not all(h.done() for h in handles):
        s = batch.stats()
        active_seen.append(s.active)
        time.sleep(0.001)
    assert all(h.result().generated_tokens == 16 for h in handles)
    assert max(active_seen) <= 3


def test_cancel_frees_the_slot_at_once(batch: BatchEngine) -> None:
    long = GenerationRequest(prompt="hello", max_tokens=400, sampling=GREEDY, ignore_eos=True)
    started = threading.Event()
    handles = [
        batch.submit(long, lambda c: started.set()),
        batch.submit(long, lambda c: None),
        batch.submit(long, lambda c: None),
        batch.submit(long, lambda c: None),  # queued: all three slots are busy
    ]
    assert started.wait(10)
    for h in handles:
        h.cancel()
    records = [h.result(10) for h in handles]
    assert {r.stop_reason for r in records} == {"cancelled"}
    assert all(r.generated_tokens < 400 for r in records)
    assert records[3].prompt_tokens_evaluated == 0 or records[3].generated_tokens < 400
    s = batch.stats()
    assert (s.active, s.queued, s.kv_cells_used) == (0, 0, 0)
    _, rec = batch.generate(_req("hello world", 4))
    assert rec.generated_tokens == 4


def test_stream_closed_early_cancels(batch: BatchEngine) -> None:
    long = GenerationRequest(prompt="hello", max_tokens=400, sampling=GREEDY, ignore_eos=True)
    stream = batch.stream(long)
    next(stream)
    stream.close()
    deadline = time.monotonic() + 5
    while batch.stats().active and time.monotonic() < deadline:
        time.sleep(0.005)
    assert batch.stats().active == 0


def test_bad_requests_are_refused_at_submit(batch: BatchEngine) -> None:
    with pytest.raises(UserInputError, match="600 tokens"):
        batch.submit(GenerationRequest(tokens=[5] * 600, max_tokens=4), lambda c: None)
    with pytest.raises(UserInputError, match="outside the vocabulary"):
        bias = SamplingParams(logit_bias={10**6: 1.0})
        batch.submit(GenerationRequest(prompt="x", sampling=bias), lambda c: None)
    with pytest.raises(UserInputError, match="outside the vocabulary"):
        batch.submit(GenerationRequest(tokens=[10**6]), lambda c: None)


def test_a_failing_callback_fails_only_its_request(batch: BatchEngine) -> None:
    def boom(chunk: Chunk) -> None:
        raise RuntimeError("consumer broke")

    errors: list[BaseException] = []
    bad = batch.submit(_req("hello", 50), boom, errors.append)
    good = batch.submit(_req("hello", 50), lambda c: None)
    with pytest.raises(RuntimeError, match="consumer broke"):
        bad.result(10)
    assert good.result(10).generated_tokens == 50
    assert len(errors) == 1
    assert batch.stats().active == 0


def test_sampled_requests_run_side_by_side(batch: BatchEngine) -> None:
    seeded = SamplingParams(temperature=0.9, seed=42, repeat_penalty=1.1)
    req = GenerationRequest(prompt="the cat", max_tokens=20, sampling=seeded)
    a = batch.submit(req, lambda c: None)
    b = batch.submit(_req("the dog", 20), lambda c: None)
    c = batch.submit(req, lambda c: None)
    assert a.result(10).generated_tokens == c.result(10).generated_tokens
    assert b.result(10).stop_reason in ("length", "eos")
    assert batch.generate(req)[0] == batch.generate(req)[0]  # same seed, same text


def test_close_cancels_what_runs(tiny_cfg: EngineConfig) -> None:
    eng = BatchEngine.load(tiny_cfg, parallel=1)
    long = GenerationRequest(prompt="hello", max_tokens=400, sampling=GREEDY, ignore_eos=True)
    started = threading.Event()
    running = eng.submit(long, lambda c: started.set())
    queued = eng.submit(long, lambda c: None)
    assert started.wait(10)
    eng.close()
    assert running.result(1).stop_reason == "cancelled"
    assert queued.result(1).stop_reason == "cancelled"
    eng.close()  # idempotent


def test_bad_parallel_is_refused(tiny_cfg: EngineConfig) -> None:
    with pytest.raises(UserInputError, match="parallel"):
        BatchEngine.load(tiny_cfg, parallel=0)


@pytest.mark.parametrize("backend_sampling", ["off", "on"])
def test_grammar_requests_side_by_side_equal_in_process(
    tiny_cfg: EngineConfig, solo: Engine, backend_sampling: str
) -> None:
    """The batch samples a grammar with the in-process engine's lazy check (and a repeat
    penalty with a grammar no longer feeds the prompt's tokens to the grammar, which aborted
    the process); with backend sampling on (the CPU backend has it too) a grammar's slot
    detaches its backend chain and the plain request beside it keeps one."""
    from dataclasses import replace

    from llcuda_tui.core.engine import json_schema_grammar

    grammar = json_schema_grammar({"type": "array", "items": {"type": "integer"}, "maxItems": 3})
    constrained = SamplingParams(temperature=0.0, grammar=grammar)
    penalized = SamplingParams(temperature=0.0, grammar=grammar, repeat_penalty=1.3)
    reqs = [
        GenerationRequest(prompt="hello world", max_tokens=40, sampling=constrained),
        GenerationRequest(prompt="the cat", max_tokens=40, sampling=penalized),
        _req("a dog", 24),
    ]
    expected = [solo.generate(r) for r in reqs]
    assert expected[0][1].grammar_rejections > 0  # the random model's picks are often refused
    cfg = replace(tiny_cfg, backend_sampling=backend_sampling)
    with BatchEngine.load(cfg, parallel=3) as eng:
        assert eng.info.backend_sampling is (backend_sampling == "on")
        handles = [eng.submit(r, lambda c: None, None) for r in reqs]
        records = [h.result(60) for h in handles]
        texts = [eng.generate(r)[0] for r in reqs]  # one at a time, after the batch
    assert texts == [t for t, _ in expected]
    for rec, (_, want) in zip(records, expected, strict=True):
        assert rec.generated_tokens == want.generated_tokens
        assert rec.grammar_rejections == want.grammar_rejections
        assert rec.grammar_full_passes == want.grammar_full_passes
        assert rec.grammar_walks == want.grammar_walks  # the batch walks the prefix forest too
    assert expected[0][1].grammar_walks > 0 and expected[1][1].grammar_walks > 0


def test_backend_chains_side_by_side_equal_in_process(tiny_cfg: EngineConfig, solo: Engine) -> None:
    """With samplers in the graph (the CPU backend has them too) greedy replies are read
    straight from the slot's chain, and a penalised one goes through llama_sampler_sample
    (its accept feeds the penalty): each reply is the in-process engine's."""
    from dataclasses import replace

    plain = _req("hello world", 32)
    biased = GenerationRequest(
        prompt="the cat", max_tokens=32, sampling=replace(GREEDY, logit_bias={261: 5.0})
    )
    penalised = GenerationRequest(
        prompt="a dog", max_tokens=32, sampling=replace(GREEDY, repeat_penalty=1.5)
    )
    reqs = [plain, biased, penalised, plain]
    want = [solo.generate(r)[0] for r in reqs]
    with BatchEngine.load(replace(tiny_cfg, backend_sampling="on"), parallel=4) as eng:
        assert eng.info.backend_sampling
        handles = eng.submit_many(reqs, [(lambda c: None, None)] * len(reqs))
        for h in handles:
            h.result(60)
        got = [eng.generate(r)[0] for r in reqs]
        together: list[list[str]] = [[] for _ in reqs]
        cbs = [(lambda c, i=i: together[i].append(c.text), None) for i in range(len(reqs))]
        for h in eng.submit_many(reqs, cbs):  # type: ignore[arg-type]
            h.result(60)
    assert got == want
    assert ["".join(t) for t in together] == want
