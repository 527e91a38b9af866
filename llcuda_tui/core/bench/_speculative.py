"""Speculative decoding's speed on an edit workload: decode t/s with and without, one run.

The workload of issue #18: the prompt holds a ~400-token text and asks for it back with a
small change, the case prompt lookup is made for. Each mode loads the model once, warms up
once and runs greedy generations; the text of every mode must equal the plain one's.
"""

from __future__ import annotations

import statistics
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from llcuda_tui.core.engine import (
    Engine,
    EngineConfig,
    GenerationRequest,
    RunRecord,
    SamplingParams,
    SpecSettings,
)

if TYPE_CHECKING:
    from llcuda_tui.core.bench._throughput import ProgressFn

SENTENCES = (
    "The store keeps every model by the sha256 of its bytes, so two names never hide one file.",
    "A pull hashes while it streams and publishes only what verifies against the manifest.",
    "The engine keeps the cells of a conversation, and the next turn decodes only what is new.",
    "When the disk is full the write fails before the rename, and nothing half-written remains.",
    "The worker answers on loopback by default and needs a key before it listens elsewhere.",
    "Benchmarks record the machine, the date and the command, so a number can be checked.",
    "Each screen is thin: it renders state, calls the core, and leaves long work to workers.",
    "Tokens reach the widget in batches, because a message per token stalls the producer.",
)


def edit_prompt(count: Callable[[str], int], text_tokens: int = 400) -> str:
    """A text of about ``text_tokens`` tokens (``count`` counts them) and the edit task."""
    parts: list[str] = []
    i = 0
    while count(" ".join(parts)) < text_tokens:
        parts.append(SENTENCES[i % len(SENTENCES)])
        i += 1
    return (
        "Repeat the following text exactly, but write 'store' as 'library' everywhere:\n\n"
        f"{' '.join(parts)}\n\nThe text with 'library' for 'store':\n\n"
    )


@dataclass
class SpecModeResult:
    mode: str
    prompt_tokens: int
    decode_tokens_per_s: float
    """Median over the rounds."""
    decode_tokens_per_s_sd: float
    drafted_tokens: int
    accepted_tokens: int
    text: str
    ratio: float = 1.0
    """decode t/s over the plain mode's."""
    same_text: bool = True
    decode_tokens_per_s_min: float = 0.0
    decode_tokens_per_s_max: float = 0.0
    ratio_min: float = 0.0
    """The lowest and highest per-round ratio (a round runs every mode once)."""
    ratio_max: float = 0.0

    @property
    def acceptance_rate(self) -> float:
        return self.accepted_tokens / self.drafted_tokens if self.drafted_tokens else 0.0


def edit_request(engine: Engine, n_gen: int) -> GenerationRequest:
    """The edit task as a chat turn (the starter models are instruct models: as a raw prompt
    SmolLM2-135M did not repeat the text at all but looped on a sentence of its own, which is
    not the workload), greedy, ``n_gen`` tokens, a cold prefill each time."""
    prompt = edit_prompt(lambda t: engine.count_tokens(GenerationRequest(prompt=t)))
    return GenerationRequest(
        messages=[{"role": "user", "content": prompt}], max_tokens=n_gen,
        sampling=SamplingParams(temperature=0.0), ignore_eos=True, cache_prompt=False,
    )  # fmt: skip


def run_spec_mode(
    config: EngineConfig, spec: SpecSettings | None, n_gen: int, repetitions: int
) -> SpecModeResult:
    """Load ``config`` with ``spec``, warm up, and time ``repetitions`` edit generations."""
    return compare_speculation(config, [spec] if spec else [], n_gen, repetitions)[-1]


def _mode_name(spec: SpecSettings | None) -> str:
    if spec is None:
        return "plain"
    return spec.mode if spec.mode == "ngram" else f"draft:{_name(spec)}"


def _name(spec: SpecSettings) -> str:
    return Path(spec.draft_model).name if spec.draft_model else "?"


@dataclass(frozen=True)
class SpecBenchJob:
    """One :func:`compare_speculation` run, as the TUI sends it to a benchmark process."""

    config: EngineConfig
    specs: tuple[SpecSettings, ...]
    n_gen: int = 400
    repetitions: int = 3


def compare_speculation(
    config: EngineConfig,
    specs: list[SpecSettings],
    n_gen: int = 400,
    repetitions: int = 3,
    on_mode: Callable[[SpecModeResult], None] | None = None,
    on_progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> list[SpecModeResult]:
    """Plain decoding and each of ``specs`` on the edit workload, ratios over plain.

    Every mode's engine is loaded at once and warmed up; then the rounds are interleaved (one
    generation of each mode per round), so a change in the machine's load touches every mode
    alike: on a shared box the modes run minutes apart otherwise. t/s and the ratio are medians
    over the rounds (the ratio of each round's pair, then the median).

    ``on_progress`` gets a :class:`BenchProgress` per load and generation (a timed one with
    its decode t/s); ``cancel`` set stops after the current round, with the rounds done (a
    cancel before the first round has begun raises ``BenchCancelled``)."""
    from contextlib import ExitStack
    from dataclasses import replace

    from llcuda_tui.core.bench._throughput import BenchCancelled, BenchProgress

    modes = [None, *specs]
    rounds = max(1, repetitions)
    total, done = 2 * len(modes) + rounds * len(modes), 0

    def step(message: str, value: float | None = None) -> None:
        nonlocal done
        done += 1
        if on_progress is not None:
            on_progress(BenchProgress(done, total, message, value, "t/s" if value else ""))

    def stop_here(what: str) -> None:
        if cancel is not None and cancel.is_set():
            raise BenchCancelled(f"speculative benchmark cancelled {what}")

    with ExitStack() as stack:
        engines = []
        for s in modes:
            stop_here("while loading")
            engines.append(stack.enter_context(Engine.load(replace(config, speculative=s))))
            step(f"loaded {_mode_name(s)}")
        reqs = [edit_request(e, n_gen) for e in engines]
        for s, e, r in zip(modes, engines, reqs, strict=True):
            stop_here("while warming up")
            e.generate(r)
            step(f"warmed up {_mode_name(s)}")
        runs: list[list[tuple[str, RunRecord]]] = [[] for _ in modes]
        for n in range(rounds):
            if n > 0 and cancel is not None and cancel.is_set():
                break  # keep the rounds done: every mode has the same number
            for i, (e, r) in enumerate(zip(engines, reqs, strict=True)):
                runs[i].append(e.generate(r))
                speed = runs[i][-1][1].decode_tokens_per_s
                step(f"round {n + 1}/{rounds}: {_mode_name(modes[i])} {speed:.1f} t/s", speed)
    base_tps = [rec.decode_tokens_per_s for _, rec in runs[0]]
    results: list[SpecModeResult] = []
    for spec, mode_runs in zip(modes, runs, strict=True):
        records = [rec for _, rec in mode_runs]
        tps = [rec.decode_tokens_per_s for rec in records]
        ratios = [t / b for t, b in zip(tps, base_tps, strict=True) if b]
        res = SpecModeResult(
            mode=_mode_name(spec),
            prompt_tokens=records[0].prompt_tokens,
            decode_tokens_per_s=statistics.median(tps),
            decode_tokens_per_s_sd=statistics.stdev(tps) if len(tps) > 1 else 0.0,
            drafted_tokens=sum(rec.drafted_tokens for rec in records),
            accepted_tokens=sum(rec.accepted_tokens for rec in records),
            text=mode_runs[0][0],
            ratio=statistics.median(ratios) if ratios else 0.0,
            same_text=mode_runs[0][0] == runs[0][0][0],
            decode_tokens_per_s_min=min(tps),
            decode_tokens_per_s_max=max(tps),
            ratio_min=min(ratios, default=0.0),
            ratio_max=max(ratios, default=0.0),
        )
        results.append(res)
        if on_mode is not None:
            on_mode(res)
    return results
