"""`llcuda tui` and bare `llcuda` as commands (no Pilot)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from llcuda_tui.commands.tui import NO_TERMINAL_HINT
from llcuda_tui.core.worker import check_worker_url, worker_access


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


def test_worker_access_from_the_command_line(tmp_path: Path) -> None:
    """--api-key-file and --ca-cert become the app's WorkerAccess; bad ones are one line."""
    key = tmp_path / "key"
    key.write_text("sekret-key-1234\n")
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    access = worker_access(str(key), str(ca))
    assert access.api_key == "sekret-key-1234" and access.verify == str(ca)
    assert "sekret" not in repr(access)
    assert worker_access(None, None).verify is True
    for args, said in (
        (["--api-key-file", str(tmp_path / "none")], "cannot read --api-key-file"),
        (["--api-key-file", str(key), "--ca-cert", str(tmp_path / "no.pem")], "no such file"),
    ):
        run = subprocess.run(
            [sys.executable, "-m", "llcuda_tui", "tui", "--worker", "http://h:1", *args],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=60,
        )
        assert run.returncode == 2 and said in run.stderr and "Traceback" not in run.stderr
