"""Small statistics for benchmark results (no numpy needed)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


def mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def sample_sd(values: Sequence[float]) -> float | None:
    """Sample standard deviation (n - 1), as llama-bench reports it; 0 for one value."""
    n = len(values)
    if n == 0:
        return None
    if n == 1:
        return 0.0
    m = sum(values) / n
    return math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) with linear interpolation (numpy's default method)."""
    if not values:
        return None
    if not 0 <= q <= 100:
        raise ValueError("percentile must be in [0, 100]")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


NOISY_CV = 0.05
"""Repetitions whose standard deviation is more than 5 % of their mean are flagged ``noisy``:
llama-bench runs of one model on a quiet machine spread by 0.5-3 %; 5 % and more means
something else ran meanwhile (or a clock changed), and a comparison with them says little."""


def coefficient_of_variation(values: Sequence[float]) -> float | None:
    """Sample standard deviation / mean; None for fewer than two values or a zero mean."""
    if len(values) < 2:
        return None
    m, sd = mean(values), sample_sd(values)
    if not m or sd is None:
        return None
    return sd / abs(m)


def noise_flags(values: Sequence[float]) -> list[str]:
    """``['noisy']`` when the repetitions spread by more than :data:`NOISY_CV`, else []."""
    cv = coefficient_of_variation(values)
    return ["noisy"] if cv is not None and cv > NOISY_CV else []


def min_samples(q: float) -> int:
    """The fewest values a ``q``-th percentile says something from: one value in
    ``1 / (1 - q/100)`` lies above it (p95: 20, p99: 100); any number for the median or
    lower. Below that it is only the largest value, interpolated."""
    return 1 if q <= 50 else math.ceil(1 / (1 - q / 100) - 1e-9)


def tail_percentile(values: Sequence[float], q: float) -> float | None:
    """:func:`percentile`, or None when there are too few values for it (:func:`min_samples`):
    a p95 of two repetitions is not one."""
    return percentile(values, q) if len(values) >= min_samples(q) else None


def summary_stat(summary: dict[str, Any], key: str) -> float | None:
    """``summary[key]`` of a stored :class:`Summary` (``mean``, ``p95``, …), None for a
    percentile its ``n`` is too small for (:func:`min_samples`)."""
    tail = key.startswith("p") and key[1:].isdigit()
    if tail and int(summary.get("n") or 0) < min_samples(float(key[1:])):
        return None
    value = summary.get(key)
    return None if value is None else float(value)


@dataclass(frozen=True)
class Summary:
    """Mean, spread and percentiles of one metric (as vLLM's ``bench serve`` reports them)."""

    n: int
    mean: float | None
    sd: float | None
    min: float | None
    p50: float | None
    p95: float | None
    p99: float | None
    max: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(values: Sequence[float]) -> Summary:
    vals = [float(v) for v in values]
    return Summary(
        n=len(vals),
        mean=mean(vals),
        sd=sample_sd(vals),
        min=min(vals) if vals else None,
        p50=percentile(vals, 50),
        p95=percentile(vals, 95),
        p99=percentile(vals, 99),
        max=max(vals) if vals else None,
    )


def ratio(new: float | None, old: float | None) -> float | None:
    """``new / old``, or None when either is missing or ``old`` is zero."""
    if new is None or old is None or old == 0:
        return None
    return new / old
