"""The store's SQLite index: derived from the files, rebuilt whenever they changed.

Names, manifests and state are copied from ``names/``, ``manifests/`` and ``state/`` (the
truth) when the stamp the store computes over those folders differs from the one recorded at
the last rebuild; writers clear the stamp before they touch the files, so a crash in between
forces a rebuild. The only data not derivable from the files are blob fingerprints (size,
mtime, inode) of the last full hash: losing them only costs a re-hash on the next load.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from llcuda_tui.core.errors import StoreError

SCHEMA_VERSION = "1"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS names (name TEXT PRIMARY KEY, manifest TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS manifests (digest TEXT PRIMARY KEY, json TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS state (
    manifest TEXT PRIMARY KEY, pinned INTEGER NOT NULL, last_used REAL
);
CREATE TABLE IF NOT EXISTS blobs (
    sha256 TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, verified_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS names_by_manifest ON names (manifest);
"""


@dataclass(frozen=True)
class Snapshot:
    """What the files say, as the store read them: the input of a rebuild."""

    names: dict[str, str]
    manifests: dict[str, str]
    state: dict[str, tuple[bool, float | None]]


class StoreIndex:
    """A small SQLite cache over the store's files (WAL, one short connection per call)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._memory: sqlite3.Connection | None = None
        self.notice: str | None = None
        """Why this process keeps the index in memory (None: it uses the file)."""

    def use_memory(self, why: str) -> sqlite3.Connection:
        """Keep the index in memory from now on (rebuilt from the files at the next sync):
        the index is derived data, so a full disk, a read-only store or a broken index file
        must not stop the commands that only read."""
        if self._memory is None:
            memory = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
            self._memory = memory
            memory.executescript(_SCHEMA)
            self.notice = why
        return self._memory

    def _open(self) -> sqlite3.Connection:
        if self._memory is not None:
            return self._memory
        try:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        except sqlite3.Error as exc:
            return self.use_memory(self._why(exc))
        try:
            conn.execute("PRAGMA busy_timeout = 30000")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            conn.close()
            return self.use_memory(self._why(exc))
        return conn

    def _why(self, exc: sqlite3.Error) -> str:
        """What is wrong with the index file, in the user's words."""
        text = str(exc)
        if "full" in text:
            return f"the disk holding {self.path} is full"
        if "readonly" in text or not os.access(self.path.parent, os.W_OK):
            return f"the store is read-only ({self.path.parent})"
        if self.path.is_dir():
            return f"{self.path} is a directory, not the store's index (remove it)"
        return f"the store's index {self.path} cannot be used: {text}"

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        conn = self._open()
        try:
            with closing(conn) if conn is not self._memory else nullcontext(conn):
                yield conn
        except sqlite3.Error as exc:
            raise StoreError(f"{self._why(exc)} (llcuda models reindex rebuilds it)") from None

    def try_write(self, write: Callable[[], None]) -> None:
        """Run a write that only keeps the index fresh; when the file refuses it (disk full,
        read-only), go on in memory rather than fail the command."""
        try:
            write()
        except StoreError as exc:
            self.use_memory(str(exc))

    def stamp(self) -> str | None:
        with self._db() as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'stamp'").fetchone()
            version = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if version is None or version[0] != SCHEMA_VERSION:
            return None
        return row[0] if row else None

    def invalidate(self) -> None:
        """Mark the index stale (before the files change; the stamp over the files would
        show the change anyway, so a refused write moves the index to memory)."""

        def write() -> None:
            with self._db() as db:
                db.execute("DELETE FROM meta WHERE key = 'stamp'")

        self.try_write(write)

    def rebuild(self, snapshot: Snapshot, stamp: str) -> None:
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                for table in ("names", "manifests", "state"):
                    db.execute(f"DELETE FROM {table}")
                db.executemany("INSERT INTO names VALUES (?, ?)", snapshot.names.items())
                db.executemany("INSERT INTO manifests VALUES (?, ?)", snapshot.manifests.items())
                db.executemany(
                    "INSERT INTO state VALUES (?, ?, ?)",
                    ((d, int(p), u) for d, (p, u) in snapshot.state.items()),
                )
                db.executemany(
                    "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                    [("stamp", stamp), ("schema", SCHEMA_VERSION)],
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def names(self) -> dict[str, str]:
        with self._db() as db:
            return dict(db.execute("SELECT name, manifest FROM names ORDER BY name").fetchall())

    def manifests(self) -> dict[str, str]:
        with self._db() as db:
            return dict(db.execute("SELECT digest, json FROM manifests").fetchall())

    def manifest_json(self, digest: str) -> str | None:
        with self._db() as db:
            row = db.execute("SELECT json FROM manifests WHERE digest = ?", (digest,)).fetchone()
        return row[0] if row else None

    def state_of(self, digest: str) -> tuple[bool, float | None]:
        with self._db() as db:
            row = db.execute(
                "SELECT pinned, last_used FROM state WHERE manifest = ?", (digest,)
            ).fetchone()
        return (bool(row[0]), row[1]) if row else (False, None)

    def states(self) -> dict[str, tuple[bool, float | None]]:
        with self._db() as db:
            rows = db.execute("SELECT manifest, pinned, last_used FROM state").fetchall()
        return {d: (bool(p), u) for d, p, u in rows}

    def fingerprint(self, sha256: str) -> str | None:
        with self._db() as db:
            row = db.execute("SELECT fingerprint FROM blobs WHERE sha256 = ?", (sha256,)).fetchone()
        return row[0] if row else None

    def set_fingerprint(self, sha256: str, fingerprint: str, verified_at: float) -> None:
        def write() -> None:  # a lost fingerprint costs a re-hash at the next load, no more
            with self._db() as db:
                db.execute(
                    "INSERT OR REPLACE INTO blobs VALUES (?, ?, ?)",
                    (sha256, fingerprint, verified_at),
                )

        self.try_write(write)

    def forget_blobs(self, sha256s: Iterable[str]) -> None:
        shas = list(sha256s)

        def write() -> None:
            with self._db() as db:
                db.executemany("DELETE FROM blobs WHERE sha256 = ?", ((s,) for s in shas))

        self.try_write(write)

    def verified_at(self) -> dict[str, float]:
        with self._db() as db:
            return dict(db.execute("SELECT sha256, verified_at FROM blobs").fetchall())
