"""Token log probabilities in the engine (``GenerationRequest.logprobs``, ``Chunk.logprobs``):
the in-process engine and the batch engine give the same ones, they are the model's own
distribution (a log-softmax of the raw logits), and a stop string holds back its tokens."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from llcuda_tui.core.engine import (
    Engine,
    EngineConfig,
    GenerationRequest,
    LogprobTrail,
    SamplingParams,
    StopMatcher,
    TokenLogprob,
)
from llcuda_tui.core.errors import UserInputError
from llcuda_tui.core.worker import BatchEngine

GREEDY = SamplingParams(temperature=0.0)


@pytest.fixture(scope="module")
def tiny(tiny_gguf: Path) -> Iterator[Engine]:
    with Engine.load(EngineConfig(tiny_gguf, n_ctx=512, n_threads=1)) as eng:
        yield eng


def _run(engine: object, request: GenerationRequest) -> tuple[str, list[TokenLogprob]]:
    text, entries = [], []
    for chunk in engine.stream(request):  # type: ignore[attr-defined]
        text.append(chunk.text)
        entries.extend(chunk.logprobs)
    return "".join(text), entries


def test_greedy_token_is_the_top_one_and_the_distribution_is_a_real_one(tiny: Engine) -> None:
    req = GenerationRequest(
        prompt="hello world", max_tokens=12, sampling=GREEDY, ignore_eos=True, logprobs=5
    )
    text, entries = _run(tiny, req)
    assert len(entries) == 12
    for e in entries:
        assert len(e.top) == 5
        assert e.top[0].id == e.id and e.top[0].logprob == e.logprob
        lps = [t.logprob for t in e.top]
        assert lps == sorted(lps, reverse=True)
        assert sum(math.exp(x) for x in lps) <= 1 + 1e-9
        assert all(x <= 0 for x in lps)
        assert e.piece == tiny.token_piece(e.id)
    # every generated token is reported once, in order: their bytes are the reply's bytes
    assert b"".join(e.piece for e in entries).decode("utf-8", errors="replace") == text


def test_no_logprobs_unless_asked(tiny: Engine) -> None:
    req = GenerationRequest(prompt="hello", max_tokens=4, sampling=GREEDY, ignore_eos=True)
    assert _run(tiny, req)[1] == []
    with pytest.raises(UserInputError, match="logprobs"):
        GenerationRequest(prompt="hello", logprobs=21)


def test_logprobs_are_before_sampling_so_temperature_does_not_change_them(tiny: Engine) -> None:
    """llama-server's default (post_sampling_probs off): the raw distribution. The first
    token's logprobs do not depend on how it was then sampled."""
    base = GenerationRequest(prompt="the cat", max_tokens=1, ignore_eos=True, logprobs=3)
    greedy = _run(tiny, replace(base, sampling=GREEDY))[1][0]
    hot = SamplingParams(temperature=1.7, seed=3, top_k=0, top_p=1.0, min_p=0.0)
    sampled = _run(tiny, replace(base, sampling=hot))[1][0]
    assert [(t.id, round(t.logprob, 9)) for t in sampled.top] == [
        (t.id, round(t.logprob, 9)) for t in greedy.top
    ]


def test_batch_engine_gives_the_in_process_engines_logprobs(tiny_gguf: Path, tiny: Engine) -> None:
    req = GenerationRequest(
        prompt="hello world", max_tokens=8, sampling=GREEDY, ignore_eos=True, logprobs=2
    )
    want_text, want = _run(tiny, req)
    batch = BatchEngine.load(EngineConfig(tiny_gguf, n_ctx=512, n_threads=1), parallel=2)
    try:
        text, got = _run(batch, req)
    finally:
        batch.close()
    assert text == want_text
    assert [e.id for e in got] == [e.id for e in want]
    for a, b in zip(got, want, strict=True):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-4)
        assert [t.id for t in a.top] == [t.id for t in b.top]


def test_stop_string_holds_back_its_tokens_and_drops_the_ones_it_cut() -> None:
    """The trail's contract, on the StopMatcher the engines use: tokens come out with the
    first chunk that carries their text; a token wholly inside the stop string is dropped."""
    stops, trail = StopMatcher(["END"]), LogprobTrail()
    out: list[tuple[str, list[int]]] = []
    for i, piece in enumerate(["ab", "E", "N", "x", "EN", "D", "zz"]):
        trail.add(TokenLogprob(i, piece.encode(), -1.0), len(piece))
        text, hit = stops.feed(piece)
        out.append((text, [e.id for e in trail.take(len(text))]))
        if hit:
            break
    assert out == [("ab", [0]), ("", []), ("", []), ("ENx", [1, 2, 3]), ("", []), ("", [])]
    assert trail.take(0) == ()


def test_a_token_without_text_goes_with_the_next_text() -> None:
    trail = LogprobTrail()
    trail.add(TokenLogprob(0, b"\xc3", -1.0), 0)  # the first byte of 'é'
    assert trail.take(0) == ()
    trail.add(TokenLogprob(1, b"\xa9", -1.0), 1)
    assert [e.id for e in trail.take(1)] == [0, 1]
    trail.add(TokenLogprob(2, b"\xc3", -1.0), 0)
    assert [e.id for e in trail.rest()] == [2]


@pytest.mark.parametrize("window", [64, -1])
def test_frequency_penalty_changes_greedy_tokens(tiny: Engine, window: int) -> None:
    """``repeat_last_n = -1`` is the whole context: llama.cpp clamps a negative window to 0
    (no penalty at all), so the chain is given the context's size instead."""

    def ids(penalty: float) -> list[int]:
        sampling = SamplingParams(temperature=0.0, frequency_penalty=penalty, repeat_last_n=window)
        req = GenerationRequest(
            prompt="hello", max_tokens=40, sampling=sampling, ignore_eos=True, logprobs=0
        )
        return [e.id for e in _run(tiny, req)[1]]

    plain, penalized = ids(0.0), ids(2.0)
    assert len(set(plain)) < len(plain)
    assert len(set(penalized)) == len(penalized)


@pytest.mark.gpu
@pytest.mark.timeout(300)
def test_logprobs_with_backend_sampling_leave_the_gpu_chain_and_come_back(
    tiny_gguf: Path,
) -> None:
    """With the whole model offloaded the chain samples on the GPU and the logits stay there:
    a logprobs request samples on the CPU, gives the same greedy text, and the next plain
    request samples on the GPU again (in-process and batched)."""
    cfg = EngineConfig(tiny_gguf, n_gpu_layers=-1, n_ctx=512)
    plain = GenerationRequest(prompt="hello world", max_tokens=16, sampling=GREEDY,
                              ignore_eos=True)  # fmt: skip
    asked = replace(plain, logprobs=3)
    with Engine.load(cfg) as eng:
        assert eng.info.backend_sampling
        want = eng.generate(plain)[0]
        text, entries = _run(eng, asked)
        assert text == want and len(entries) == 16
        assert all(e.top[0].id == e.id for e in entries)
        assert eng.generate(plain)[0] == want
    with BatchEngine.load(cfg, parallel=2) as batch:
        assert batch.info.backend_sampling
        assert batch.generate(plain)[0] == want
        text, got = _run(batch, asked)
        assert text == want
        for a, b in zip(got, entries, strict=True):
            assert a.id == b.id and a.logprob == pytest.approx(b.logprob, abs=1e-3)
        assert batch.generate(plain)[0] == want


def test_a_stop_string_reports_only_the_tokens_before_it(tiny: Engine) -> None:
    req = GenerationRequest(
        prompt="hello world", max_tokens=24, sampling=GREEDY, ignore_eos=True, logprobs=0
    )
    full, entries = _run(tiny, req)
    pieces = [e.text for e in entries]
    # a stop string that starts inside the reply, at a token boundary 10 tokens in
    stop = "".join(pieces[10:12])
    at = full.find(stop)
    assert stop and at > 0
    text, got = _run(tiny, replace(req, stop=[stop]))
    assert text == full[:at]
    assert "".join(e.text for e in got).startswith(text)
    assert len(got) <= 10 and [e.id for e in got] == [e.id for e in entries[: len(got)]]


def test_the_process_engine_carries_logprobs_across(tiny_gguf: Path, tiny: Engine) -> None:
    """The TUI's engine runs in a child process: the chunks' logprobs cross the pipe."""
    from llcuda_tui.core.engine import ProcessEngine

    req = GenerationRequest(
        prompt="hello world", max_tokens=6, sampling=GREEDY, ignore_eos=True, logprobs=2
    )
    want = _run(tiny, req)
    with ProcessEngine.load(EngineConfig(tiny_gguf, n_ctx=512, n_threads=1)) as child:
        got = _run(child, req)
    assert got[0] == want[0]
    assert [(e.id, e.piece, [t.id for t in e.top]) for e in got[1]] == [
        (e.id, e.piece, [t.id for t in e.top]) for e in want[1]
    ]
