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


CTX_BEYOND_TRAINING_HELP = (
    "allow --ctx beyond the model's training context: RoPE is stretched with YaRN by "
    "training/ctx (a model whose GGUF sets its own RoPE scaling keeps it); quality past the "
    "training context is not guaranteed (default: config ctx_beyond_training)"
)


def add_ctx_beyond_training(parser: argparse.ArgumentParser) -> None:
    """``--ctx-beyond-training`` (infer, serve, batch): None unless given, so the config's
    ``[engine] ctx_beyond_training`` applies."""
    parser.add_argument(
        "--ctx-beyond-training", action="store_true", default=None, help=CTX_BEYOND_TRAINING_HELP
    )
