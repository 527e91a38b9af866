"""How long a cancel takes to stop a long prefill: Esc-to-stopped through the engine process.

The TUI's Esc calls ``cancel()`` on the handle of a reply running in an engine process
(``ProcessEngine``); this does the same, at a spread of moments into a ~1,100-token prefill,
and times ``cancel()`` to the run record arriving on this side (the TUI shows it within one
more 100 ms drain tick). ``before``: prompt chunks of ``n_batch`` (what the engine did before
``prefill_chunk_s``); ``after``: the chunks sized to ~0.25 s on the CPU (core/engine/_prefill.py).
The two run interleaved, so load from other jobs hits both alike.

    python3 bench/prefill_cancel.py --model smollm2-135m-instruct --rounds 6
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROMPT = "Summarize this: " + "the river carries stones down to the sea, " * 122
"""About 1,100 tokens on SmolLM2 (the prefill in #15 item 6)."""
DELAYS_S = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0)
"""Moments into the prefill at which the cancel comes (one per round, in turn)."""


def model_path(name: str) -> Path:
    path = Path(name)
    if path.is_file():
        return path
    from llcuda_tui.core.config import Paths
    from llcuda_tui.core.store import starter_path

    base = Path(tempfile.mkdtemp(prefix="llcuda-bench-"))
    return starter_path(name, Paths(base / "data", base / "cache", base / "config"))


def stop_time(engine: object, delay_s: float) -> tuple[float, int, int]:
    """Cancel ``delay_s`` into the prefill: seconds from cancel() to the record, and the
    prompt tokens evaluated of all (a reply that finished its prefill first is not a sample)."""
    from llcuda_tui.core.engine import GenerationRequest, ProcessEngine, SamplingParams

    assert isinstance(engine, ProcessEngine)
    req = GenerationRequest(
        prompt=PROMPT, max_tokens=8, sampling=SamplingParams(temperature=0.0), cache_prompt=False
    )
    handle = engine.submit(req, lambda chunk: None)
    time.sleep(delay_s)
    t_cancel = time.perf_counter()
    handle.cancel()
    record = handle.result(120)
    took = time.perf_counter() - t_cancel
    return took, record.prompt_tokens_evaluated, record.prompt_tokens


def full_prefill_s(engine: object) -> float:
    """Seconds of the whole prompt's prefill (one token generated, nothing cached)."""
    from llcuda_tui.core.engine import GenerationRequest, ProcessEngine

    assert isinstance(engine, ProcessEngine)
    req = GenerationRequest(prompt=PROMPT, max_tokens=1, cache_prompt=False)
    return engine.generate(req)[1].prefill_s


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m-instruct", help="a GGUF or a starter name")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--threads", type=int, default=0, help="0: the engine's default")
    args = p.parse_args(argv)

    from llcuda_tui.core.engine import EngineConfig, ProcessEngine

    path = model_path(args.model)
    base = EngineConfig(path, n_gpu_layers=0, n_ctx=2048, n_threads=args.threads)
    variants = {
        "before": EngineConfig(
            path, n_gpu_layers=0, n_ctx=2048, n_threads=args.threads, prefill_chunk_s=None
        ),
        "after": base,
    }
    engines = {name: ProcessEngine.load(cfg) for name, cfg in variants.items()}
    times: dict[str, list[float]] = {name: [] for name in engines}
    prefill: dict[str, list[float]] = {name: [] for name in engines}
    try:
        for i in range(args.rounds):
            for name, engine in engines.items():  # the whole prefill: what small chunks cost
                prefill[name].append(full_prefill_s(engine))
            delay = DELAYS_S[i % len(DELAYS_S)]
            for name, engine in engines.items():
                took, done, total = stop_time(engine, delay)
                mid = done < total
                if mid:
                    times[name].append(took)
                print(f"{name:6} cancel at {delay:.1f} s: stopped in {took:.3f} s after "
                      f"{done}/{total} prompt tokens{'' if mid else ' (prefill was over)'}",
                      flush=True)  # fmt: skip
    finally:
        for engine in engines.values():
            engine.close()
    print(f"# {path.name}, CPU, {engines['after'].info.n_threads} threads, n_batch 512")
    for name, samples in times.items():
        if samples:
            print(f"{name}: median {statistics.median(samples):.3f} s, max {max(samples):.3f} s "
                  f"over {len(samples)} cancels mid-prefill; whole prefill median "
                  f"{statistics.median(prefill[name]):.2f} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
