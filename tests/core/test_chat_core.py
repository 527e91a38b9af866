"""Chat turns without a UI: context planning, the reply buffer, model choices, pulls."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from llcuda_tui.core.chat import RateMeter, ReplyStream, build_messages, plan_context
from llcuda_tui.core.config import Paths
from llcuda_tui.core.engine import Chunk, Engine, EngineConfig, GenerationRequest, SamplingParams
from llcuda_tui.core.fit import DeviceMemory
from llcuda_tui.core.fmt import fmt_size
from llcuda_tui.core.store import (
    ModelChoice,
    PullJob,
    TransferProgress,
    default_choice,
    fit_badge,
    model_choices,
)

GIB = 2**30


def words(messages: list[dict[str, str]]) -> int:
    """A stand-in token count: 2 per message of framing plus one per word."""
    return sum(2 + len(m["content"].split()) for m in messages)


def turns(*texts: str) -> list[dict[str, str]]:
    return [
        {"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(texts)
    ]


def test_build_messages_skips_an_empty_system_prompt() -> None:
    assert build_messages("  ", turns("hi")) == [{"role": "user", "content": "hi"}]
    assert build_messages("Be brief.", turns("hi"))[0] == {"role": "system", "content": "Be brief."}


def test_plan_counts_system_history_and_reply() -> None:
    plan = plan_context(words, "one two three", turns("a b", "c d e", "f"), 10, 100)
    assert plan.system_tokens == 5 and plan.history_tokens == 4 + 5 + 3
    assert plan.total == 5 + 12 + 10 and plan.state == "ok" and plan.turns_to_drop == 0
    assert plan.describe().startswith("27/100 tokens: system 5 + history 12 + reply 10")


def test_plan_warns_near_the_end_and_never_drops_by_itself() -> None:
    near = plan_context(words, "", turns("a " * 40), 45, 100)
    assert near.state == "warn" and "Near the limit" in near.describe()
    history = turns("a " * 30, "b " * 30, "c " * 10)
    over = plan_context(words, "", history, 40, 100)
    assert over.state == "over" and over.fits_at_all
    assert over.turns_to_drop == 2  # the oldest user turn and its reply, nothing more
    assert "drop the oldest 2 turn(s)" in over.describe()
    assert words(history[2:]) + 40 <= 100
    hopeless = plan_context(words, "", turns("x " * 200), 10, 100)
    assert hopeless.state == "over" and not hopeless.fits_at_all


def test_plan_with_the_real_tokenizer(smollm_path: Path, cpu_threads: int) -> None:
    with Engine.load(
        EngineConfig(smollm_path, n_gpu_layers=0, n_ctx=256, n_threads=cpu_threads)
    ) as engine:

        def count(msgs: list[dict[str, str]]) -> int:
            return engine.count_tokens(GenerationRequest(messages=msgs))

        history = turns("Tell me about GGUF.", "It is a file format.", "More please.")
        plan = plan_context(count, "Be brief.", history, 64, engine.info.n_ctx)
        exact = count(build_messages("Be brief.", history))
        assert plan.prompt_tokens == exact and plan.total == exact + 64
        long = turns("word " * 150, "reply " * 60, "last question")
        over = plan_context(count, "", long, 64, engine.info.n_ctx)
        assert over.state == "over" and over.turns_to_drop == 2
        # what is left fits, and the engine accepts it
        _, record = engine.generate(
            GenerationRequest(
                messages=build_messages("", long[2:]),
                max_tokens=4,
                sampling=SamplingParams(temperature=0),
            )
        )
        assert record.prompt_tokens + 64 <= engine.info.n_ctx


class _Handle:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class _Engine:
    """Records the callbacks submit() was given (the engine thread is the test)."""

    def submit(self, request, on_chunk, on_error=None):  # type: ignore[no-untyped-def]
        self.on_chunk, self.on_error = on_chunk, on_error
        self.handle = _Handle()
        return self.handle


def test_reply_stream_collects_and_drains_in_batches() -> None:
    engine = _Engine()
    stream = ReplyStream.start(engine, object())
    for piece in ["Hel", "lo", ", ", "world"]:
        engine.on_chunk(Chunk(piece))
    assert stream.tokens == 4 and not stream.done
    assert stream.drain() == "Hello, world" and stream.drain() == ""
    engine.on_chunk(Chunk("!", record="RECORD"))
    assert stream.done and stream.record == "RECORD" and stream.tokens == 4
    assert stream.drain() == "!" and stream.text == "Hello, world!"
    stream.cancel()
    assert engine.handle.cancelled


def test_reply_stream_error() -> None:
    engine = _Engine()
    stream = ReplyStream.start(engine, object())
    engine.on_error(RuntimeError("decode failed"))
    assert stream.done and str(stream.error) == "decode failed"


def test_reply_stream_with_the_real_engine(smollm_path: Path, cpu_threads: int) -> None:
    with Engine.load(
        EngineConfig(smollm_path, n_gpu_layers=0, n_ctx=256, n_threads=cpu_threads)
    ) as engine:
        req = GenerationRequest(
            messages=[{"role": "user", "content": "Say hello."}],
            max_tokens=16,
            sampling=SamplingParams(temperature=0),
        )
        stream = ReplyStream.start(engine, req)
        stream.handle.result(timeout=60)
        text, record = engine.generate(req)
        assert stream.done and stream.text == text
        assert stream.tokens == record.generated_tokens == stream.record.generated_tokens


def test_rate_meter() -> None:
    now = iter([0.0, 0.5, 1.0])
    meter = RateMeter(clock=lambda: next(now))
    assert meter.update(0) == 0.0
    assert meter.update(50) == 100.0
    assert meter.update(60) == 20.0


def test_transfer_progress_speed_and_eta() -> None:
    p = TransferProgress()
    p.update(0, 1000, now=0.0)
    p.update(100, 1000, now=1.0)
    assert p.speed_bytes_per_s == 100.0 and p.eta_s == 9.0
    p.update(300, 1000, now=2.0)
    assert p.speed_bytes_per_s == pytest.approx(0.7 * 100 + 0.3 * 200)
    assert p.describe().startswith("300 B of 1000 B (30%), 130 B/s, ETA 0:05")
    p.update(0, 1000, now=3.0)  # a restart does not produce a negative speed
    assert p.speed_bytes_per_s > 0


def test_fmt_size() -> None:
    assert [fmt_size(n) for n in (512, 1536, 94 * 2**20, 3 * GIB)] == [
        "512 B",
        "1.5 KiB",
        "94 MiB",
        "3.0 GiB",
    ]


def test_choices_list_starters_and_default_to_smollm(llcuda_home: Path, smollm_path: Path) -> None:
    choices = model_choices(Paths.from_env())
    by_name = {c.name: c for c in choices}
    smollm = by_name["smollm2-135m-instruct"]
    assert smollm.source == "starter" and smollm.quant == "Q4_1" and smollm.summary is not None
    assert default_choice(choices).name == "smollm2-135m-instruct"
    mine = ModelChoice("mine", smollm.path, None, "Q8_0", 1, "store", None, last_used=5.0)
    assert default_choice([*choices, mine]).name == "mine"
    assert default_choice(choices, preferred="gemma-3-270m").name == "gemma-3-270m"


def test_fit_badges(smollm_path: Path, llcuda_home: Path) -> None:
    smollm = {c.name: c for c in model_choices(Paths.from_env())}["smollm2-135m-instruct"]
    ram = DeviceMemory("ram", "RAM", 16 * GIB, 32 * GIB)
    assert fit_badge(smollm, 4096, 0, ram).short == "fits"
    assert fit_badge(smollm, 4096, 0, DeviceMemory("ram", "RAM", 2**20, GIB)).short == "won't fit"
    small_gpu = DeviceMemory("cuda", "cuda:0 tiny", (512 + 200) * 2**20, GIB)
    partial = fit_badge(smollm, 4096, -1, small_gpu)
    assert partial.verdict == "partial" and partial.short.startswith("ngl ")
    unknown = ModelChoice("x", smollm.path, None, "?", 1, "store", None)
    assert fit_badge(unknown, 4096, -1, ram).verdict == "unknown"


def test_pull_job_cancel_sets_the_event_the_pull_checks() -> None:
    event = threading.Event()
    job = PullJob(object(), "acme/x", "x.gguf", cancel_event=event)
    job._on_progress(10, 100)
    assert job.progress.done == 10 and not job.cancelled
    job.cancel()
    assert event.is_set() and job.cancelled
    job._on_progress(20, 100)  # progress never raises: storepull checks the event
    assert job.progress.done == 20
