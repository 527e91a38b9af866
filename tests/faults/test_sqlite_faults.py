"""The SQLite stores (results: bench_store.py, conversations: conversations.py, both over
sqlite_store.py) when another process holds the lock, and when the file is damaged.

Locked: a write waits up to ``BUSY_TIMEOUT_S`` and goes through if the lock goes; if it does
not, one line names the file and says what to do, and the same store works once it is free.
Damaged: on open the file is moved aside (kept byte for byte) and a new store is started, with
a one-line notice naming both files; the CLI prints it as a warning."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from llcuda_tui.core.bench import BenchStore, StoredRun
from llcuda_tui.core.config import Paths
from llcuda_tui.core.conversations import ConversationStore
from llcuda_tui.core.db import SqliteStore
from llcuda_tui.core.errors import LlcudaError

pytestmark = pytest.mark.timeout(60)


@dataclass(frozen=True)
class Kind:
    """How to open, write one item into and list the items of one store."""

    open: Callable[[Path], SqliteStore]
    write: Callable[[SqliteStore, str], None]
    read: Callable[[SqliteStore], list[str]]


def _save_run(store: SqliteStore, label: str) -> None:
    assert isinstance(store, BenchStore)
    store.save_run(StoredRun("throughput", {}, {}, [{"test": "tg8", "avg_ts": 1.0}], command=label))


def _runs(store: SqliteStore) -> list[str]:
    assert isinstance(store, BenchStore)
    return [store.get_run(r.run_id).command for r in reversed(store.list_runs())]


def _chats(store: SqliteStore) -> list[str]:
    assert isinstance(store, ConversationStore)
    return sorted(c.title for c in store.conversations())


KINDS = {
    "results": Kind(BenchStore, _save_run, _runs),
    "conversations": Kind(
        ConversationStore,
        lambda s, t: s.create(t) and None,
        _chats,  # type: ignore[attr-defined]
    ),
}

HOLD_LOCK = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
db.execute("COMMIT")
"""


def hold_lock(path: Path, seconds: float) -> subprocess.Popen[str]:
    """Another process takes the write lock on ``path`` and keeps it ``seconds``."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(path), str(seconds)],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


@pytest.mark.parametrize("name", list(KINDS))
def test_a_locked_store_waits_then_says_so(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kind = KINDS[name]
    monkeypatch.setattr(SqliteStore, "BUSY_TIMEOUT_S", 1.0)
    path = tmp_path / f"{name}.sqlite"
    with kind.open(path) as store:
        kind.write(store, "first")
        brief = hold_lock(path, 0.3)
        kind.write(store, "second")  # waited for the lock, then wrote
        brief.wait(10)

        holder = hold_lock(path, 30)
        try:
            t0 = time.monotonic()
            with pytest.raises(LlcudaError) as err:
                kind.write(store, "lost?")
            assert 0.9 < time.monotonic() - t0 < 5
            with pytest.raises(LlcudaError, match="cannot open") as on_open:
                kind.open(path)
        finally:
            holder.kill()
            holder.wait(10)
        for exc in (err.value, on_open.value):
            text = str(exc)
            assert "\n" not in text and str(path) in text
            assert "locked" in text and "another process" in text and "try again" in text

        kind.write(store, "third")  # the same store works once the lock is gone
        assert kind.read(store) == ["first", "second", "third"]


@pytest.mark.parametrize("name", list(KINDS))
@pytest.mark.parametrize("where", ["header", "page"])
def test_a_damaged_store_is_moved_aside_and_started_anew(
    name: str, where: str, tmp_path: Path
) -> None:
    kind = KINDS[name]
    path = tmp_path / f"{name}.sqlite"
    with kind.open(path) as store:
        for i in range(40):
            kind.write(store, f"item {i:02d}")
    data = bytearray(path.read_bytes())
    at = 0 if where == "header" else 4096  # the header, or the first table page
    data[at : at + 4096] = b"garbage!" * 512
    path.write_bytes(bytes(data))

    with kind.open(path) as store:
        aside = store.recovered_from
        assert aside is not None and aside.read_bytes() == bytes(data)  # nothing deleted
        assert aside.parent == path.parent and aside.name.startswith(f"{path.name}.corrupt-")
        notice = store.notice or ""
        assert "\n" not in notice and str(path) in notice and str(aside) in notice
        assert "damaged" in notice
        assert kind.read(store) == []
        kind.write(store, "new")
    with kind.open(path) as store:  # the new file is a good one
        assert store.recovered_from is None and kind.read(store) == ["new"]


def test_the_cli_warns_about_a_damaged_results_store(llcuda_home: Path) -> None:
    path = Paths.from_env().data_dir / "bench.sqlite"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not a database" * 100)

    def history() -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "llcuda_tui", "bench", "history"]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True)

    err = history().stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("llcuda: warning: the results store"), err
    assert "moved to" in err[0]
    assert [p.name.split(".corrupt-")[0] for p in path.parent.iterdir()] == ["bench.sqlite"] * 2
    again = history()
    assert again.stderr == "" and "no benchmark runs yet" in again.stdout
