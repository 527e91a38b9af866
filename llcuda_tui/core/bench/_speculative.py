"""Speculative decoding's speed on an edit workload: decode t/s with and without, one run.

The workload of issue #18: the prompt holds a ~400-token text and asks for it back with a
small change, the case prompt lookup is made for. Each mode loads the model once, warms up
once and runs greedy generations; the text of every mode must equal the plain one's.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llcuda_tui.core.engine import (
    Engine,
    EngineConfig,
    GenerationRequest,
    SamplingParams,
    SpecSettings,
)

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
    decode_tokens_per_s_sd: float
    drafted_tokens: int
    accepted_tokens: int
    text: str
    ratio: float = 1.0
    """decode t/s over the plain mode's."""
    same_text: bool = True

    @property
    def acceptance_rate(self) -> float:
        return self.accepted_tokens / self.drafted_tokens if self.drafted_tokens else 0.0


def run_spec_mode(
    config: EngineConfig, spec: SpecSettings | None, n_gen: int, repetitions: int
) -> SpecModeResult:
    """Load ``config`` with ``spec``, warm up, and time ``repetitions`` edit generations."""
    from dataclasses import replace

    with Engine.load(replace(config, speculative=spec)) as engine:
        prompt = edit_prompt(lambda t: engine.count_tokens(GenerationRequest(prompt=t)))
        req = GenerationRequest(
            prompt=prompt, max_tokens=n_gen, sampling=SamplingParams(temperature=0.0),
            ignore_eos=True, cache_prompt=False,
        )  # fmt: skip
        engine.generate(req)
        runs = [engine.generate(req) for _ in range(repetitions)]
    records = [r for _, r in runs]
    tps = [r.decode_tokens_per_s for r in records]
    return SpecModeResult(
        mode="plain"
        if spec is None
        else spec.mode
        if spec.mode == "ngram"
        else f"draft:{_name(spec)}",
        prompt_tokens=records[0].prompt_tokens,
        decode_tokens_per_s=statistics.mean(tps),
        decode_tokens_per_s_sd=statistics.stdev(tps) if len(tps) > 1 else 0.0,
        drafted_tokens=sum(r.drafted_tokens for r in records),
        accepted_tokens=sum(r.accepted_tokens for r in records),
        text=runs[0][0],
    )


def _name(spec: SpecSettings) -> str:
    return Path(spec.draft_model).name if spec.draft_model else "?"


def compare_speculation(
    config: EngineConfig,
    specs: list[SpecSettings],
    n_gen: int = 400,
    repetitions: int = 3,
    on_mode: Callable[[SpecModeResult], None] | None = None,
) -> list[SpecModeResult]:
    """Plain decoding, then each of ``specs``, on the edit workload; ratios over plain."""
    results: list[SpecModeResult] = []
    for spec in [None, *specs]:
        r = run_spec_mode(config, spec, n_gen, repetitions)
        if spec is None:
            r.mode = "plain"
        base = results[0] if results else r
        r.ratio = (
            r.decode_tokens_per_s / base.decode_tokens_per_s if base.decode_tokens_per_s else 0
        )
        r.same_text = r.text == base.text
        results.append(r)
        if on_mode is not None:
            on_mode(r)
    return results
