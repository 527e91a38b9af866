"""What the store's calls return: a named model (its entry), its state, and the outcome of a
pull or of an upkeep command."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llcuda_tui.core.store._manifest import Manifest, iso_utc


@dataclass(frozen=True)
class ModelState:
    """The only mutable data of a model: pinned (never evicted) and when it was last loaded."""

    pinned: bool = False
    last_used: float | None = None


@dataclass(frozen=True)
class ModelEntry:
    """One name in the store, with the model it points at."""

    name: str
    digest: str
    manifest: Manifest
    state: ModelState
    path: Path
    """The file to load (view of the model file: original name, next to its shards)."""
    aliases: tuple[str, ...] = ()
    """Other names of the same model."""

    @property
    def sha256(self) -> str:
        return self.manifest.files[0].sha256

    def to_json(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "name": self.name,
            "aliases": list(self.aliases),
            "quant": m.quant,
            "size": m.size,
            "sha256": self.sha256,
            "manifest": self.digest,
            "pinned": self.state.pinned,
            "last_used": iso_utc(self.state.last_used),
            "created": m.created,
            "path": str(self.path),
            "source": m.source.to_dict(),
            "files": [f.to_dict() for f in m.files],
            "gguf": m.gguf,
        }


@dataclass(frozen=True)
class PullResult:
    """What a pull did: the entry, bytes downloaded, files already in the store, evictions."""

    entry: ModelEntry
    downloaded_bytes: int = 0
    reused_files: int = 0
    up_to_date: bool = False
    evicted: tuple[str, ...] = ()


@dataclass
class Report:
    """What a maintenance command found or did (gc, verify, repair, rm)."""

    actions: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    freed_bytes: int = 0
    checked_files: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "actions": self.actions,
            "problems": self.problems,
            "freed_bytes": self.freed_bytes,
            "checked_files": self.checked_files,
        }
