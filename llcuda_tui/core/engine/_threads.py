"""How many CPU threads llama.cpp gets when the user does not say."""

from __future__ import annotations

import os


def default_threads() -> int:
    """Physical cores, capped at 8: decode is memory-bound and more threads only contend."""
    n = os.cpu_count() or 1
    return max(1, min(8, n // 2 if n >= 4 else n))


def max_threads() -> int:
    """The most threads a load may ask for: twice the logical CPUs. llama.cpp allocates per
    thread, so 100000 threads ended in SIGSEGV or std::bad_alloc (docs/reliability.md)."""
    return 2 * (os.cpu_count() or 1)
