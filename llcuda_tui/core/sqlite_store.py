"""An SQLite file with a versioned schema: the base of the results and conversation stores."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar, Self

from llcuda_tui.core.errors import LlcudaError


class SqliteStore:
    """Opens (creating parents), enables foreign keys, applies ``SCHEMA`` and refuses a file
    written by a newer schema. Subclasses set the class variables below."""

    SCHEMA: ClassVar[str]
    SCHEMA_VERSION: ClassVar[int]
    LABEL: ClassVar[str]
    """How messages name the store, e.g. 'results store'."""
    ERROR: ClassVar[type[LlcudaError]]

    def __init__(self, path: Path | str, check_same_thread: bool = True) -> None:
        self.path = Path(path)
        try:
            if str(path) != ":memory:":
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), timeout=10, check_same_thread=check_same_thread)
            self._db.execute("PRAGMA foreign_keys = ON")
            self._migrate()
        except (sqlite3.Error, OSError) as exc:
            raise self.ERROR(f"cannot open the {self.LABEL} {path}: {exc}") from None

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
            raise self.ERROR(f"{self.LABEL} {self.path}: cannot {what}: {exc}") from None
