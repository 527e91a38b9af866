"""argparse ``type=`` functions for numbers that must be in range before anything runs:
``float("nan")`` and ``float("inf")`` parse, and a negative count is still an ``int``."""

from __future__ import annotations

import argparse
import math


def seconds(text: str) -> float:
    """A finite number of seconds >= 0 (``--grace nan`` used to be accepted)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, not {text!r}")
    return value


def count(text: str) -> int:
    """An integer >= 0 (``models show --ctx -5`` used to be accepted)."""
    return _int_at_least(text, 0)


def positive(text: str) -> int:
    """An integer >= 1 (repetitions, iterations, limits)."""
    return _int_at_least(text, 1)


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be >= {low}, not {value}")
    return value
