"""A real terminal: tmux runs the installed `llcuda` entry point, F1-F4 switch through the
four screens, and `capture-pane` shows each one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

TMUX = shutil.which("tmux")
LLCUDA = shutil.which("llcuda") or str(Path(sys.executable).parent / "llcuda")

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(TMUX is None, reason="tmux is not installed (apt-get install tmux)"),
]


class Tmux:
    def __init__(self, socket: str) -> None:
        self.socket = socket

    def __call__(self, *args: str) -> str:
        assert TMUX is not None
        proc = subprocess.run(
            [TMUX, "-L", self.socket, *args], capture_output=True, text=True, timeout=30
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "llcuda")

    def wait_for(self, *texts: str, timeout: float = 40.0, any_of: tuple[str, ...] = ()) -> str:
        """Until every one of ``texts`` and (if given) one of ``any_of`` is on the screen."""
        deadline = time.monotonic() + timeout
        while True:
            shown = self.screen()
            if all(t in shown for t in texts) and (not any_of or any(t in shown for t in any_of)):
                return shown
            if time.monotonic() > deadline:
                raise AssertionError(f"{texts} not on the screen after {timeout} s:\n{shown}")
            time.sleep(0.2)


@pytest.fixture()
def tmux(llcuda_home: Path) -> Iterator[Tmux]:
    t = Tmux(f"llcuda-test-{uuid.uuid4().hex[:8]}")
    env = {"LLCUDA_HOME": str(llcuda_home), "TERM": "xterm-256color"}
    exports = " ".join(f"{k}={v}" for k, v in env.items())
    t(
        "-f",
        os.devnull,
        "new-session",
        "-d",
        "-s",
        "llcuda",
        "-x",
        "120",
        "-y",
        "40",
        f"env {exports} {LLCUDA}",
    )
    try:
        yield t
    finally:
        subprocess.run([TMUX or "tmux", "-L", t.socket, "kill-server"], capture_output=True)


def test_installed_entry_point_shows_each_screen(tmux: Tmux) -> None:
    # every footer keeps F1-F4, at whatever size tmux gives the pane (here, detached, it was
    # 80 columns wide though the session asks for 120x40)
    tmux.wait_for("message: Enter sends", "^n New", "smollm2-135m-instruct", "f4 Bench")
    tmux("send-keys", "-t", "llcuda", "F2")
    tmux.wait_for("Model store", "Hugging Face", "f4 Bench")
    tmux("send-keys", "-t", "llcuda", "F3")
    # the footer can repaint before the body (seen under load): wait for the body's text too
    tmux.wait_for("History span", "f4 Bench", any_of=("No GPU telemetry", "driver"))
    tmux("send-keys", "-t", "llcuda", "F4")
    tmux.wait_for("pp tokens", "Results", "f4 Bench")
    tmux("send-keys", "-t", "llcuda", "F1")
    tmux.wait_for("message: Enter sends")
    tmux("send-keys", "-t", "llcuda", "C-q")
    deadline = time.monotonic() + 30
    while _alive(tmux):  # the session ends when llcuda exits
        assert time.monotonic() < deadline, "llcuda did not exit on Ctrl+Q"
        time.sleep(0.2)


def _alive(tmux: Tmux) -> bool:
    proc = subprocess.run(
        [TMUX or "tmux", "-L", tmux.socket, "has-session", "-t", "llcuda"], capture_output=True
    )
    return proc.returncode == 0


def test_a_pasted_multi_line_prompt_is_sent_whole(tmux: Tmux, llcuda_home: Path) -> None:
    from llcuda_tui.core.config import Paths
    from llcuda_tui.core.conversations import ConversationStore

    lines = ["Summarize this:", "Rivers carry water.", "Lakes hold it.", "Clouds return it."]
    tmux.wait_for("message: Enter sends", "loaded in")  # the starter model loaded itself
    # a bracketed paste, as a terminal sends one (tmux turns its newlines into CRs, as
    # terminals do)
    tmux("set-buffer", "-b", "prompt", "\n".join(lines))
    tmux("paste-buffer", "-p", "-d", "-b", "prompt", "-t", "llcuda")
    tmux.wait_for(*lines)  # all four lines in the message box, none sent yet
    tmux("send-keys", "-t", "llcuda", "Enter")
    deadline = time.monotonic() + 60
    store = ConversationStore.open(Paths.from_env())
    try:
        while True:
            convs = store.conversations()
            sent = [m for c in convs for m in store.messages(c.id) if m.role == "user"]
            if sent:
                break
            assert time.monotonic() < deadline, f"nothing sent:\n{tmux.screen()}"
            time.sleep(0.2)
    finally:
        store.close()
    assert sent[0].content == "\n".join(lines)
    tmux("send-keys", "-t", "llcuda", "Escape")
    tmux("send-keys", "-t", "llcuda", "C-q")
