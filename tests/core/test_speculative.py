"""Speculative decoding on the starter models (CPU): greedy output is the output without
speculation with both drafters, a draft with another vocabulary is refused in one line, and a
cancel stops a speculative generation within one step."""

from __future__ import annotations

import itertools
import threading
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
from llcuda_tui.core.engine._prefix import KEEP_ALIGN
from llcuda_tui.core.engine._speculative import DraftLength, NgramDrafter, StepCost, first_cost
from llcuda_tui.core.errors import ModelLoadError

GREEDY = SamplingParams(temperature=0.0)
TEXT = (
    "The store keeps every model by the sha256 of its bytes. A pull hashes while it streams "
    "and publishes only what verifies. The engine keeps the cells of a conversation, so the "
    "next turn decodes only what is new."
)
EDIT = f"Repeat this text exactly, word for word:\n\n{TEXT}\n\nRepeated:\n\n"


def _reply(engine: Engine, prompt: str, n: int = 32, **kw: object) -> tuple[str, object]:
    req = GenerationRequest(prompt=prompt, max_tokens=n, sampling=GREEDY, ignore_eos=True, **kw)  # type: ignore[arg-type]
    return engine.generate(req)


@pytest.fixture(scope="module", params=["smollm", "gemma"])
def target(request: pytest.FixtureRequest, smollm_path: Path, gemma_path: Path) -> Path:
    return smollm_path if request.param == "smollm" else gemma_path


def _plain(path: Path, threads: int, prompts: list[str]) -> list[str]:
    with Engine.load(EngineConfig(path, n_ctx=1024, n_threads=threads)) as eng:
        return [_reply(eng, p, cache_prompt=False)[0] for p in prompts]


OTHER = (
    "Change every 'cat' to 'dog' in this text and repeat it:\n\nThe cat sat on the mat. The "
    "cat saw a bird. The bird flew away and the cat went back to sleep on the mat.\n\n"
)
# Where the target's top two logits are within ~0.1, a batch of several tokens (a verify step,
# or a prefill) and one token at a time can round to different argmaxes on the CPU: on
# SmolLM2 after OTHER + "\nThe" a batch gives ' cat' 23.76 vs ' original' 23.67, one token at
# a time ' original'. The draft-model path (a full draft_max batch every step) hits that on
# OTHER, so it is checked on the edit prompt; llama.cpp's own loop has the same property.
PROMPTS = {"ngram": [EDIT, EDIT, OTHER], "draft": [EDIT, EDIT]}


@pytest.mark.timeout(900)  # two engines, several replies: slow on a loaded 2-core machine
@pytest.mark.parametrize("mode", ["ngram", "draft"])
def test_greedy_output_is_the_output_without_speculation(
    target: Path, mode: str, cpu_threads: int
) -> None:
    prompts = PROMPTS[mode]
    plain = _plain(target, cpu_threads, prompts)
    spec = SpecSettings(mode=mode, draft_model=target if mode == "draft" else None, draft_max=8)
    with Engine.load(
        EngineConfig(target, n_ctx=1024, n_threads=cpu_threads, speculative=spec)
    ) as eng:
        records = []
        for prompt, want in zip(prompts, plain, strict=True):
            text, record = _reply(eng, prompt)  # the second reuses the first's cells
            assert text == want
            records.append(record)
        if mode == "ngram":  # the opt-out decodes plainly, and gives the same text
            text, record = _reply(eng, EDIT, speculative=False)
            assert text == plain[0] and record.drafted_tokens == 0
    first = records[0]
    assert first.spec_mode == mode
    assert first.drafted_tokens > 0 and 0 < first.accepted_tokens <= first.drafted_tokens
    assert first.acceptance_rate == first.accepted_tokens / first.drafted_tokens
    # after the first reply's rollbacks the slot's token record still matched its cells
    # (the kept prefix ends on an aligned position before the prompt's last token)
    n = records[1].prompt_tokens - 1
    assert records[1].prompt_tokens_cached == n - n % KEEP_ALIGN > 0
    if mode == "draft":  # the target drafting for itself: every draft is accepted
        assert first.accepted_tokens == first.drafted_tokens


def test_a_draft_with_another_vocabulary_is_refused(
    smollm_path: Path, gemma_path: Path, cpu_threads: int
) -> None:
    spec = SpecSettings(mode="draft", draft_model=gemma_path)
    with pytest.raises(ModelLoadError) as err:
        Engine.load(EngineConfig(smollm_path, n_ctx=512, n_threads=cpu_threads, speculative=spec))
    message = str(err.value)
    assert "\n" not in message and "vocabulary" in message and str(gemma_path) in message


@pytest.mark.timeout(600)
def test_cancel_stops_within_one_step(smollm_path: Path, cpu_threads: int) -> None:
    spec = SpecSettings(mode="ngram", draft_max=8)
    cfg = EngineConfig(smollm_path, n_ctx=1024, n_threads=cpu_threads, speculative=spec)
    with Engine.load(cfg) as eng:
        seen = threading.Event()
        chunks: list[Chunk] = []

        def on_chunk(chunk: Chunk) -> None:
            chunks.append(chunk)
            if len(chunks) == 3:
                eng.cancel()
                seen.set()

        req = GenerationRequest(prompt=EDIT, max_tokens=400, sampling=GREEDY, ignore_eos=True)
        record = eng.submit(req, on_chunk).result(timeout=300)
        assert seen.is_set()
        assert record.stop_reason == "cancelled"
        # the tokens already verified in that step may still come out, no more
        assert record.generated_tokens <= 3 + spec.draft_max
        # and the engine decodes correctly afterwards
        again, _ = _reply(eng, EDIT, n=16)
        assert _plain(smollm_path, cpu_threads, [EDIT])[0].startswith(again)


def test_prompt_lookup_proposes_what_followed_the_latest_match() -> None:
    drafter = NgramDrafter(ngram_max=3)
    history = [1, 2, 3, 4, 5, 9, 1, 2, 3]
    assert drafter.draft(history, 4) == [4, 5, 9, 1]
    assert drafter.draft([*history, 7], 4) == []  # (3, 7) and (2, 3, 7) never occurred


def _length(slope: float, **kw: object) -> tuple[DraftLength, StepCost]:
    cost = StepCost(prior=slope)
    return DraftLength(SpecSettings(mode="ngram", draft_max=16, **kw), cost), cost  # type: ignore[arg-type]


def test_step_cost_fits_the_share_of_a_draft_from_timed_steps() -> None:
    cost = StepCost(prior=0.05)
    assert cost.slope() == 0.05  # nothing measured yet
    for k in [1, 4, 1, 4]:
        cost.observe(k, 0.010 + 0.0045 * k)
    assert cost.slope() == pytest.approx(0.45, rel=1e-6)
    only_one_length = StepCost(prior=0.3)
    for _ in range(8):
        only_one_length.observe(4, 0.03)
    assert only_one_length.slope() == 0.3  # one draft length tells nothing about the slope


def _feed(length: DraftLength, p_token: float, steps: int) -> None:
    # each step's drafts are accepted in a run whose expected share is p_token per draft
    for i in range(steps):
        k = length.next() or 1
        accepted = 0
        while accepted < k and ((i * 7 + accepted * 13) % 100) < 100 * p_token:
            accepted += 1
        length.update(k, accepted)


def test_draft_length_is_short_when_a_verify_batch_is_dear_and_acceptance_middling() -> None:
    # the CPU case that lost before (#18): 70 % accepted, a draft costs 0.45 of a step
    cpu, _ = _length(0.45)
    _feed(cpu, 0.7, 40)
    gpu, _ = _length(0.02)
    _feed(gpu, 0.7, 40)
    assert 1 <= cpu.next() <= 3
    assert gpu.next() > cpu.next()


def test_draft_length_is_long_when_nearly_every_draft_is_accepted() -> None:
    length, _ = _length(0.45)
    for _ in range(30):
        length.update(length.next(), length.next())  # every draft accepted
    assert length.next() >= 8


def test_an_always_rejected_drafter_only_probes() -> None:
    length, _ = _length(0.45, draft_min=2)
    asked = []
    for _ in range(64):
        k = length.next()
        asked.append(k)
        length.update(k, 0)
    tail = asked[16:]
    assert tail.count(0) >= len(tail) * 0.9  # drafting paused ...
    assert set(tail) <= {0, 2}  # ... but probed at draft_min now and then
    assert 2 in tail


def test_rejected_probes_wait_longer_and_an_accepted_one_drafts_again_soon() -> None:
    # the 1B draft of the 8B on the GPU: every probe rejected; a fixed wait of 16 steps
    # between probes was part of its 26 % cost
    length, _ = _length(0.45)
    drafting = []
    for i in range(1500):
        k = length.next()
        if k:
            drafting.append(i)
            length.update(k, 0)
    gaps = [b - a for a, b in itertools.pairwise(drafting)]
    assert gaps[-1] == length.probe_max  # the wait doubled up to its cap ...
    assert sorted(gaps[-5:]) == gaps[-5:]  # ... and never shrank while probes failed
    assert sum(1 for i in drafting if i >= 500) <= 5
    while not (k := length.next()):
        pass
    length.update(k, k)  # a probe the target accepted
    steps = 1
    while not length.next():
        steps += 1
    assert steps <= length.probe


def test_a_draft_model_starts_doubtful_and_prompt_lookup_hopeful(tmp_path: Path) -> None:
    # each guess of a draft model costs a decode of its own: both decode loops start it at
    # p = 0.5, prompt lookup at 0.75; its size over the target's raises the first cost
    cost = StepCost(prior=0.05)
    draft = SpecSettings(mode="draft", draft_model=tmp_path / "d.gguf")
    assert DraftLength(draft, cost).p() == 0.5
    assert DraftLength(SpecSettings(mode="ngram"), cost).p() == 0.75
    (tmp_path / "d.gguf").write_bytes(b"x" * 100)
    (tmp_path / "t.gguf").write_bytes(b"x" * 400)
    assert first_cost(draft, True, tmp_path / "t.gguf").slope() == pytest.approx(0.30)
    assert first_cost(SpecSettings(mode="ngram"), False, tmp_path / "t.gguf").slope() == 0.45


def test_a_fixed_length_ignores_acceptance() -> None:
    length, _ = _length(0.45, adaptive=False)
    for _ in range(10):
        length.update(16, 0)
    assert length.next() == 16


@pytest.mark.timeout(600)
def test_the_speculative_bench_reports_progress_and_a_cancel_keeps_the_rounds_done(
    smollm_path: Path, cpu_threads: int
) -> None:
    """What the Benchmark screen's speculative mode sees: a step per load, warm-up and timed
    generation (those with their t/s); a cancel during round 1 ends the run after it, with
    every mode measured once; a cancel before any round has begun is BenchCancelled."""
    from llcuda_tui.core.bench import BenchCancelled, BenchProgress, compare_speculation

    cfg = EngineConfig(smollm_path, n_ctx=2048, n_threads=cpu_threads)
    specs = [SpecSettings(mode="ngram", draft_max=8)]
    cancel = threading.Event()
    steps: list[BenchProgress] = []

    def progress(p: BenchProgress) -> None:
        steps.append(p)
        if p.value is not None:  # round 1 has begun: stop after it
            cancel.set()

    results = compare_speculation(cfg, specs, 8, 3, on_progress=progress, cancel=cancel)
    assert [r.mode for r in results] == ["plain", "ngram"]
    assert [p.done for p in steps] == [1, 2, 3, 4, 5, 6]
    assert all(p.total == 2 * 2 + 3 * 2 for p in steps)  # 3 rounds were planned
    timed = [p for p in steps if p.value is not None]
    assert len(timed) == 2 and all(p.unit == "t/s" and p.value > 0 for p in timed)
    assert [p.value for p in timed] == [r.decode_tokens_per_s for r in results]  # one round
    assert results[1].same_text and results[1].drafted_tokens > 0

    with pytest.raises(BenchCancelled):
        compare_speculation(cfg, specs, 8, 1, cancel=cancel)  # cancelled before a load


@pytest.mark.timeout(600)
def test_an_always_rejected_draft_model_backs_off_across_replies(
    tiny_gguf: Path, tmp_path: Path, cpu_threads: int
) -> None:
    """A draft model's acceptance is learnt once per engine, not per reply: with a draft
    that is always rejected (another random model on the same vocabulary) the probes keep
    their growing wait from one reply to the next, so later replies draft nothing, and the
    text is the text without speculation."""
    from tests.gguf_factory import write_tiny_llama

    draft = write_tiny_llama(tmp_path / "other.gguf", seed=7)
    prompts = [f"{w} is the word number {i}." for i, w in enumerate(("one", "two", "three"))]
    prompts += prompts[:2]

    def replies(spec: SpecSettings | None) -> list[tuple[str, object]]:
        cfg = EngineConfig(tiny_gguf, n_ctx=512, n_threads=cpu_threads, speculative=spec)
        with Engine.load(cfg) as eng:
            return [_reply(eng, p, n=64, cache_prompt=False) for p in prompts]

    plain = replies(None)
    spec = replies(SpecSettings(mode="draft", draft_model=draft, draft_max=4))
    assert [t for t, _ in spec] == [t for t, _ in plain]
    drafted = [r.drafted_tokens for _, r in spec]  # type: ignore[attr-defined]
    # probes after 16, 32, 64, 128 idle steps (each rejected one doubles the wait): over five
    # replies of 63 steps, steps 16, 48, 112 and 240; a draft length learnt afresh per reply
    # probes twice in every one of them (10 in all). An accepted probe (a chance agreement of
    # the two random models) would set the wait back to 16: the bound leaves room for one.
    assert drafted[0] >= 1 and sum(drafted) <= 6, drafted
