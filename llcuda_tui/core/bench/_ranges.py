"""llama-bench's number lists (``512``, ``128,512``, ``128-1024*2``, ``0-32+8``), as the
``llcuda bench`` options and the Benchmark screen's fields take them."""

from __future__ import annotations

import re

_RANGE = re.compile(r"^(-?\d+)(?:-(\d+)(?:([+*])(\d+))?)?$")
MAX_VALUES = 1000
"""A longer range is a typo (``1-100000``), not a benchmark."""


def int_list(text: str) -> tuple[int, ...]:
    """``512``, ``128,512``, ``128-1024*2``, ``0-32+8`` (llama-bench's syntax) as ints;
    ValueError (one line) when ``text`` is not such a list."""
    out: list[int] = []
    for part in text.split(","):
        m = _RANGE.match(part.strip())
        if not m:
            raise ValueError(f"'{text}' is not a number list (e.g. 128,512 or 128-1024*2)")
        first = int(m.group(1))
        last = int(m.group(2)) if m.group(2) else first
        op, step = m.group(3) or "+", int(m.group(4) or 1)
        if last < first:
            raise ValueError(f"bad range '{part}': end is before start")
        value = first
        while value <= last:
            out.append(value)
            nxt = value + step if op == "+" else value * step
            if nxt <= value:
                raise ValueError(f"bad range '{part}': it does not advance")
            value = nxt
            if len(out) > MAX_VALUES:
                raise ValueError(f"range '{part}' is too long")
    return tuple(out)
