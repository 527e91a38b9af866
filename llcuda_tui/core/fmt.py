"""How llcuda writes sizes, ages and durations for people: one function each, shared by the
TUI, the CLI and the core's messages (so a size reads the same everywhere it appears)."""

from __future__ import annotations

import re
import time

from llcuda_tui.core.errors import ConfigError

UNITS = ("B", "KiB", "MiB", "GiB", "TiB")
"""Binary units, 1024 apart."""


def fmt_size(n: float, digits: int | None = None, unit: str | None = None) -> str:
    """``n`` bytes in the largest binary unit below 1024 of it, or in ``unit`` when given.

    ``digits`` None (tables, the TUI): a whole number from 10 up, else one decimal
    ('512 B', '1.5 KiB', '94 MiB'); a number: that many decimals ('1.50 GiB'; the CLI, the
    fit estimate). Bytes are always whole.
    """
    if unit is None:
        name = UNITS[0]
        for name in UNITS:
            if abs(n) < 1024 or name == UNITS[-1]:
                break
            n /= 1024
    else:
        name = unit
        n /= 1024 ** UNITS.index(unit)
    if name == "B":
        return f"{n:.0f} B"
    if digits is None:
        digits = 0 if abs(n) >= 10 else 1
    return f"{n:.{digits}f} {name}"


def parse_size(text: str, what: str = "store.max_size") -> int | None:
    """Bytes in ``text`` ('50GB', '1.5 TiB', '800M', '1234'); None for ''.

    'GB' (with the B) is decimal, 10**9; 'G' and 'GiB' are binary, 2**30. A ConfigError
    naming the setting ``what`` when ``text`` is not a size.
    """
    text = text.strip()
    if not text:
        return None
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]?)(I?B?)", text.upper())
    if m is None:
        raise ConfigError(f"{what}: '{text}' is not a size (e.g. 50GB, 200GiB)")
    number, prefix, suffix = float(m.group(1)), m.group(2), m.group(3)
    base = 1000 if suffix == "B" and prefix else 1024
    return int(number * base ** " KMGT".index(prefix or " "))


def fmt_ago(ts: float | None, now: float | None = None) -> str:
    """How long ago ``ts`` (epoch seconds) was: 'just now', '5 min ago', '3 d ago', 'never'."""
    if ts is None:
        return "never"
    seconds = max(0.0, (time.time() if now is None else now) - ts)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return "just now"


def fmt_duration(seconds: float | None) -> str:
    """``seconds`` as minutes and seconds ('2:05'; an ETA); '–' when unknown."""
    if seconds is None:
        return "–"
    return f"{seconds // 60:.0f}:{seconds % 60:02.0f}"
