"""Where each part of the store lives, and which names may be used.

Layout under ``Paths.store_dir`` (see docs/store.md)::

    blobs/<sha256>              the GGUF bytes, read-only, named by their hash
    manifests/<digest>.json     what a model is (source, files, GGUF summary), read-only,
                                named by the sha256 of its own canonical JSON
    names/<quoted name>         {"name", "manifest"}: a name or alias, replaced atomically
    state/<digest>.json         {"pinned", "last_used"}: the only mutable per-model data
    views/<digest>/<file name>  symlinks with the original file names (split shards load by name)
    tmp/                        partial downloads and temp files (same filesystem as blobs/)
    locks/ inuse/ quarantine/   per-blob locks, leases of loaded models, blobs that failed a check
    index.sqlite                derived from the files; ``reindex`` rebuilds it
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from llcuda_tui.core.store._errors import UnsafeNameError

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
"""A blob's or a manifest's name: a lowercase hex sha256."""
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-/:+@]*$")


@dataclass(frozen=True)
class Layout:
    """Where each part of the store lives."""

    root: Path

    @property
    def blobs(self) -> Path:
        return self.root / "blobs"

    @property
    def manifests(self) -> Path:
        return self.root / "manifests"

    @property
    def names(self) -> Path:
        return self.root / "names"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def views(self) -> Path:
        return self.root / "views"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def locks(self) -> Path:
        return self.root / "locks"

    @property
    def inuse(self) -> Path:
        return self.root / "inuse"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    @property
    def index_path(self) -> Path:
        return self.root / "index.sqlite"

    def blob(self, sha256: str) -> Path:
        return self.blobs / sha256

    def manifest(self, digest: str) -> Path:
        return self.manifests / f"{digest}.json"

    def name_file(self, name: str) -> Path:
        return self.names / quote(name, safe="")

    def state_file(self, digest: str) -> Path:
        return self.state / f"{digest}.json"

    def view_dir(self, digest: str) -> Path:
        return self.views / digest

    def view_target(self, sha256: str) -> Path:
        """What a view's symlink points at: the blob, relative to ``views/<digest>/``."""
        return Path("..") / ".." / "blobs" / sha256

    def lock(self, key: str) -> Path:
        return self.locks / f"{key}.lock"

    def dirs(self) -> tuple[Path, ...]:
        return (
            self.blobs,
            self.manifests,
            self.names,
            self.state,
            self.views,
            self.tmp,
            self.locks,
            self.inuse,
            self.quarantine,
        )


def check_name(name: str) -> str:
    """``name`` if it can name a model (``owner/repo:Q4_K_M``, ``my-model``), else an error."""
    bad = (
        not name
        or len(name) > 200
        or len(quote(name, safe="")) > 240  # its file under names/ must fit NAME_MAX (255)
        or not _NAME_RE.fullmatch(name)  # match() with '$' let a trailing newline through
        or any(part in ("", ".", "..") for part in name.split("/"))
    )
    if bad:
        raise UnsafeNameError(
            f"{_shown(name)} cannot name a model (letters, digits and ._-/:+@, at most 200; "
            "no '..', no leading '/')"
        )
    return name


def _shown(name: str) -> str:
    """``name`` quoted for an error line (escapes visible, long ones cut)."""
    text = repr(name)
    return text if len(text) <= 60 else text[:57] + "..."
