"""`llcuda tui` and bare `llcuda` as commands (no Pilot)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from llcuda_tui.commands.tui import NO_TERMINAL_HINT, check_worker_url


def test_worker_urls_are_checked() -> None:
    assert check_worker_url(" http://gpu-box:8765/ ") == "http://gpu-box:8765"
    with pytest.raises(ValueError):
        check_worker_url("gpu-box")


def test_llcuda_tui_without_a_terminal() -> None:
    """Bare `llcuda` prints one hint and exits 0; `llcuda tui` says it needs a terminal."""
    bare = subprocess.run(
        [sys.executable, "-m", "llcuda_tui"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    assert bare.returncode == 0 and bare.stderr.strip() == NO_TERMINAL_HINT
    tui = subprocess.run(
        [sys.executable, "-m", "llcuda_tui", "tui"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    assert tui.returncode == 2 and "needs a terminal" in tui.stderr
    assert "Traceback" not in bare.stderr + tui.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "llcuda_tui", "tui", "--worker", "nope"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    assert bad.returncode == 2 and "http://host:port" in bad.stderr
