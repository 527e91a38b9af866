"""The one set of formatters (core/fmt.py): sizes as the TUI, the CLI and the fit estimate
print them, ages, durations, and sizes read back from the config."""

from __future__ import annotations

import pytest

from llcuda_tui.core.errors import ConfigError
from llcuda_tui.core.fmt import fmt_ago, fmt_duration, fmt_size, parse_size

GIB = 2**30


def test_sizes_short_for_tables() -> None:
    assert [fmt_size(n) for n in (0, 512, 1536, 94 * 2**20, 3 * GIB, 5 * 2**50)] == [
        "0 B",
        "512 B",
        "1.5 KiB",
        "94 MiB",
        "3.0 GiB",
        "5120 TiB",
    ]


def test_sizes_with_fixed_decimals_and_units() -> None:
    # the CLI and the store's messages: two decimals, bytes whole
    assert [fmt_size(n, 2) for n in (512, 571_811, 3 * GIB)] == ["512 B", "558.41 KiB", "3.00 GiB"]
    # the fit estimate reads in GiB, whatever the size
    assert fmt_size(30 * 2**20, 2, "GiB") == "0.03 GiB"
    assert fmt_size(16 * GIB, 2, "GiB") == "16.00 GiB"
    # the bench report: MiB below a GiB
    assert fmt_size(123 * 2**20, 2, "MiB") == "123.00 MiB"


def test_ago_and_duration() -> None:
    assert fmt_ago(None) == "never"
    assert fmt_ago(1000.0, now=1030.0) == "just now"
    assert fmt_ago(1000.0, now=1000.0 + 5 * 60) == "5 min ago"
    assert fmt_ago(0.0, now=3 * 86400.0) == "3 d ago"
    assert fmt_duration(None) == "–"
    assert fmt_duration(125.0) == "2:05"


def test_parse_size() -> None:
    assert parse_size(" ") is None
    assert parse_size("1.5 TiB") == int(1.5 * 2**40)
    assert parse_size("50GB") == 50 * 10**9
    with pytest.raises(ConfigError, match=r"store\.max_size: 'lots' is not a size"):
        parse_size("lots")
