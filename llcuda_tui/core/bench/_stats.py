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
