"""The kill -9 loop of issue #23: 20 ``llcuda models`` processes (import, pull, gc, verify)
killed at random points leave a store that verifies clean, no temp of a dead process after
gc, and the user's source files with the modes they had."""

from __future__ import annotations

import os
import random
import stat
import subprocess
import sys

import pytest

from llcuda_tui.core.store import Store
from llcuda_tui.core.store._fs import pid_alive, writer_pid
from llcuda_tui.core.store._layout import SHA256_RE
from tests.storekit import REPO, ROOT, copy_of


def start(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "llcuda_tui", "models", *args], cwd=ROOT, env=os.environ.copy(),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


@pytest.mark.timeout(420)
def test_twenty_kill9_at_random_points_leave_the_store_clean(
    store: Store, models, server, tmp_path
) -> None:
    rng = random.Random(23)
    sources = [copy_of(models[k], tmp_path) for k in "abcd"]
    for i, src in enumerate(sources):
        os.chmod(src, (0o644, 0o640, 0o600, 0o664)[i])
    modes = {src: stat.S_IMODE(src.stat().st_mode) for src in sources}
    store.import_path(sources[0], name="seed")
    runs = [
        lambda: start("import", str(rng.choice(sources)), "--name", f"m{rng.randrange(3)}"),
        lambda: start("pull", REPO, "--quant", rng.choice(["Q4_K_M", "Q8_0", "Q6_K"])),
        lambda: start("gc", "--grace", rng.choice(["0", "3600"])),
        lambda: start("verify"),
    ]
    # The kill point is a random moment of a run. How long a run takes depends on the machine
    # and its load, so the window adapts: a run that finished before its kill shrinks it, one
    # killed mid-run widens it again, until 20 runs were killed while they were running.
    killed, started, window = 0, 0, 3.0
    while killed < 20 and started < 100:
        proc = runs[started % len(runs)]()
        started += 1
        try:
            proc.wait(timeout=rng.uniform(0.05, window))
            window = max(0.1, window * 0.7)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            killed += 1
            window = min(3.0, window * 1.1)
    assert killed == 20, f"only {killed} of {started} runs were still running when killed"

    gc = subprocess.run(
        [sys.executable, "-m", "llcuda_tui", "models", "gc"], cwd=ROOT, env=os.environ.copy(),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert gc.returncode == 0, gc.stderr
    report = store.verify()
    assert report.ok, report.problems
    for f in store.layout.tmp.iterdir():
        resumable = SHA256_RE.match(f.name.split(".")[0]) is not None  # a pull's partial
        pid = writer_pid(f)
        assert resumable or (pid is not None and pid_alive(pid)), f"left behind: {f.name}"
    assert {src: stat.S_IMODE(src.stat().st_mode) for src in sources} == modes
