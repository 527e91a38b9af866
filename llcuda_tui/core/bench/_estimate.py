"""Benchmark defaults sized to the machine, and how long a pp/tg run will take.

llama-bench's defaults (pp512, tg128, 5 repetitions) take seconds on a GPU; on a small CPU
machine a 270M model's pp512 alone takes seconds per repetition, and the run minutes. So the
Benchmark screen starts from :func:`suggested_sizes` and shows :func:`estimate_s` before Run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class BenchSizes:
    """A pp/tg run's size: prompt tokens, generated tokens, repetitions."""

    n_prompt: int
    n_gen: int
    repetitions: int


GPU_SIZES = BenchSizes(512, 128, 5)
"""llama-bench's own defaults."""
CPU_SIZES = BenchSizes(128, 32, 3)
"""Small enough for a 2-core machine: a 270M Q4 model runs it in well under a minute."""

# Rough speeds for a model never measured here, by what bounds each phase: prefill by
# arithmetic (2 FLOP per parameter per token), decode by reading the weights once per token.
_CPU_FLOPS_PER_CORE = 20e9
_CPU_BYTES_PER_S = 10e9
_GPU_FLOPS = 50e12
_GPU_BYTES_PER_S = 1e12


def suggested_sizes(on_gpu: bool) -> BenchSizes:
    return GPU_SIZES if on_gpu else CPU_SIZES


@dataclass(frozen=True)
class Estimate:
    seconds: float
    measured: bool
    """From an earlier run of this model here (else from its size: a guess)."""

    def describe(self) -> str:
        s = self.seconds
        when = f"~{s:.0f} s" if s < 90 else f"~{s / 60:.0f} min"
        how = "from its last run here" if self.measured else "a guess from its size"
        return f"{when} ({how})"


def estimate_s(
    sizes: BenchSizes,
    *,
    model_bytes: int,
    n_params: int,
    on_gpu: bool,
    n_cpus: int,
    warmup: bool = True,
    measured: dict[str, float] | None = None,
) -> Estimate:
    """Seconds for one pp/tg run: (repetitions + warm-up) x (prompt + generation) + a load.
    ``measured`` ({'pp': t/s, 'tg': t/s} of this model's last run here) beats the guess."""
    if measured and measured.get("pp") and measured.get("tg"):
        pp_ts, tg_ts, load_s, known = measured["pp"], measured["tg"], 1.0, True
    else:
        params = max(n_params, model_bytes)  # quantized: ~1 byte or less per parameter
        flops = _GPU_FLOPS if on_gpu else _CPU_FLOPS_PER_CORE * max(1, n_cpus)
        bandwidth = _GPU_BYTES_PER_S if on_gpu else _CPU_BYTES_PER_S
        pp_ts = flops / (2 * params)
        tg_ts = bandwidth / max(model_bytes, 1)
        load_s = 1.0 + model_bytes / 2e9
        known = False
    runs = sizes.repetitions + (1 if warmup else 0)
    seconds = load_s
    if sizes.n_prompt:
        seconds += runs * sizes.n_prompt / pp_ts
    if sizes.n_gen:
        seconds += runs * sizes.n_gen / tg_ts
    return Estimate(seconds, known)


def measured_speeds(results: list[dict[str, Any]], model_path: str) -> dict[str, float]:
    """{'pp': t/s, 'tg': t/s} of ``model_path`` in a run's rows (its first pp and tg test)."""
    out: dict[str, float] = {}
    for r in results:
        if str(r.get("model_filename")) != model_path or not r.get("avg_ts"):
            continue
        phase = "pp" if r.get("n_prompt") else "tg"
        out.setdefault(phase, float(r["avg_ts"]))
    return out
