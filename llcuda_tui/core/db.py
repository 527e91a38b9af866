"""An SQLite file with a versioned schema: the base of the results and conversation stores.

Faults (docs/reliability.md): a file locked by another process is waited for
(``BUSY_TIMEOUT_S``), then one line says who holds it and what to do; a damaged file (garbage
bytes, a malformed page) found on open is moved aside to ``<name>.corrupt-<UTC time>`` (kept,
never deleted) and a new, empty store is started, with :attr:`SqliteStore.notice` saying so.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar, Self

from llcuda_tui.core.errors import LlcudaError, UserInputError

_SIDE_FILES = ("-journal", "-wal", "-shm")


def is_corrupt(exc: sqlite3.Error) -> bool:
    """The file is not a database or one of its pages is malformed."""
    name = str(getattr(exc, "sqlite_errorname", ""))
    return name == "SQLITE_NOTADB" or name.startswith("SQLITE_CORRUPT")


def is_busy(exc: sqlite3.Error) -> bool:
    """Another connection holds a lock that did not go within the busy timeout."""
    name = str(getattr(exc, "sqlite_errorname", ""))
    return name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED"))


class SqliteStore:
    """Opens (creating parents), enables foreign keys, applies ``SCHEMA`` and refuses a file
    written by a newer schema. Subclasses set the class variables below."""

    SCHEMA: ClassVar[str]
    SCHEMA_VERSION: ClassVar[int]
    LABEL: ClassVar[str]
    """How messages name the store, e.g. 'results store'."""
    ERROR: ClassVar[type[LlcudaError]]
    BUSY_TIMEOUT_S: ClassVar[float] = 10.0
    """How long a statement waits for another process's lock before it fails."""

    def __init__(self, path: Path | str, check_same_thread: bool = True) -> None:
        self.path = Path(path)
        self.recovered_from: Path | None = None
        """Where a damaged file found on open was moved to (None: it was fine)."""
        self.notice: str | None = None
        """One line for the user when something was recovered on open."""
        memory = str(path) == ":memory:"
        try:
            if not memory:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._connect(str(path), check_same_thread)
            except sqlite3.DatabaseError as exc:
                if memory or not is_corrupt(exc):
                    raise
                self._move_aside(exc)
                self._connect(str(path), check_same_thread)
        except LlcudaError:
            raise
        except (sqlite3.Error, OSError) as exc:
            hint = self._busy_hint() if isinstance(exc, sqlite3.Error) and is_busy(exc) else ""
            raise self.ERROR(f"cannot open the {self.LABEL} {path}: {exc}{hint}") from None

    def _connect(self, path: str, check_same_thread: bool) -> None:
        """Open ``path`` as ``self._db``, check it and bring its schema up to date."""
        db = sqlite3.connect(path, timeout=self.BUSY_TIMEOUT_S, check_same_thread=check_same_thread)
        try:
            if path != ":memory:":
                row = db.execute("PRAGMA quick_check").fetchone()
                if row is None or row[0] != "ok":
                    err = sqlite3.DatabaseError(f"integrity check failed: {row[0] if row else '?'}")
                    err.sqlite_errorname = "SQLITE_CORRUPT"  # type: ignore[attr-defined]
                    raise err
            db.execute("PRAGMA foreign_keys = ON")
            self._db = db
            self._migrate()
        except BaseException:
            db.close()
            raise

    def _move_aside(self, exc: sqlite3.Error) -> None:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while aside.exists():
            n += 1
            aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
        self.path.rename(aside)
        for suffix in _SIDE_FILES:
            side = self.path.with_name(self.path.name + suffix)
            if side.exists():
                side.rename(aside.with_name(aside.name + suffix))
        self.recovered_from = aside
        self.notice = (
            f"the {self.LABEL} {self.path} was damaged ({exc}); it was moved to {aside} "
            "and a new, empty one was started"
        )

    def _busy_hint(self) -> str:
        return (
            f" (another process held it for {self.BUSY_TIMEOUT_S:g} s; "
            "close the other llcuda or try again)"
        )

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > self.SCHEMA_VERSION:
            raise self.ERROR(
                f"the {self.LABEL} {self.path} was written by a newer llcuda-tui "
                f"(schema {version} > {self.SCHEMA_VERSION})"
            )
        with self._db:
            self._db.executescript(self.SCHEMA)
            self._db.execute(f"PRAGMA user_version = {self.SCHEMA_VERSION}")

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Turn an SQLite error inside the block into one clear line."""
        try:
            yield
        except sqlite3.Error as exc:
            hint = ""
            if is_busy(exc):
                hint = self._busy_hint()
            elif is_corrupt(exc):
                hint = " (the file is damaged: restart llcuda to move it aside and start anew)"
            raise self.ERROR(f"{self.LABEL} {self.path}: cannot {what}: {exc}{hint}") from None

    def _resolve_id(self, table: str, ref: str | int, noun: str, listing: str) -> int:
        """A row id of ``table`` from ``12``, ``last``/``latest`` or ``-K`` (the K-th latest),
        as the CLI's ``show``/``rm`` commands take them; ``listing`` is the command that lists
        the ids, named in the error."""
        text = str(ref).strip().lower()
        if text in ("last", "latest"):
            text = "-1"
        try:
            number = int(text)
        except ValueError:
            raise UserInputError(
                f"bad {noun} id '{ref}' (a number from '{listing}', 'last' or -K)"
            ) from None
        with self._errors(f"read {noun}s"):
            if number < 0:
                row = self._db.execute(
                    f"SELECT id FROM {table} ORDER BY id DESC LIMIT 1 OFFSET ?", (-number - 1,)
                ).fetchone()
            else:
                row = self._db.execute(f"SELECT id FROM {table} WHERE id = ?", (number,)).fetchone()
        if row is None:
            raise UserInputError(f"no {noun} '{ref}' in {self.path}")
        return int(row[0])
