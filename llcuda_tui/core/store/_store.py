"""The model store: sha256-addressed blobs, immutable manifests, names, views, an index (the
layout is in ``_layout.py``, the files and the index in ``_base.py``).

:class:`Store` is the one way the CLI, the TUI and the tests call the store: each verb is a
method with its full signature, implemented in the module named for it (``_local``,
``_pull``, ``_adopt``, ``_maint``, ``_space``). For other parts of the program:
:func:`resolve_name` (what the engine loads; it checks the files and records the use),
:func:`record_use`, :func:`list_models`, :func:`lease`, :func:`lease_file` (what every engine
load holds while its model is loaded).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llcuda_tui.core.config import Paths, Settings
from llcuda_tui.core.fmt import parse_size
from llcuda_tui.core.store._base import StoreBase
from llcuda_tui.core.store._fs import Progress
from llcuda_tui.core.store._records import ModelEntry, PullResult, Report

if TYPE_CHECKING:  # each verb's module loads when the verb runs: `models ls` needs none
    from llcuda_tui.core.store._hub import RemoteFile
    from llcuda_tui.core.store._maint import OnFile
    from llcuda_tui.core.store._manifest import Source
    from llcuda_tui.core.store._pull import Status


def _quiet(_: str) -> None:
    """An ``on_status`` that says nothing (``_pull.quiet``)."""
    return None


class Store(StoreBase):
    """The model store under ``paths.store_dir``; every method is safe across processes."""

    @classmethod
    def from_settings(cls, settings: Settings) -> Store:
        """The store of ``settings`` (its paths, its ``store.max_size`` cap)."""
        return cls(settings.paths, parse_size(settings.store.max_size))

    # -- bringing models in --

    def import_path(
        self,
        path: Path,
        name: str | None = None,
        source: Source | None = None,
        on_progress: Progress | None = None,
        on_evict: Callable[[str], None] | None = None,
    ) -> ModelEntry:
        """Import a local GGUF (all shards when it is one shard of a split model);
        ``on_evict`` hears each name the size cap evicted to make room."""
        from llcuda_tui.core.store import _local

        return _local.import_path(self, path, name, source, on_progress, on_evict)

    def import_starters(self, on_progress: Progress | None = None) -> list[ModelEntry]:
        """Make each starter model an ordinary store entry named after it (hardlinked)."""
        from llcuda_tui.core.store import _local

        return _local.import_starters(self, on_progress)

    def adopt_starters_once(self) -> list[ModelEntry] | None:
        """At a first run, the installed starter models as store entries (None: done before,
        so starters the user deleted stay deleted)."""
        from llcuda_tui.core.store import _local

        return _local.adopt_starters_once(self)

    def pull(
        self,
        repo: str,
        *,
        file: str | None = None,
        quant: str | None = None,
        revision: str | None = None,
        name: str | None = None,
        on_progress: Progress | None = None,
        on_status: Status = _quiet,
        cancel: threading.Event | None = None,
    ) -> PullResult:
        """Download one model of ``repo`` (by ``file`` or ``quant``) from the Hub.

        Setting ``cancel`` (from any thread) stops the download within one chunk with
        :class:`PullCancelled`; the partial file stays and the next pull resumes it."""
        from llcuda_tui.core.store import _pull

        return _pull.pull(
            self, repo, file=file, quant=quant, revision=revision, name=name,
            on_progress=on_progress, on_status=on_status, cancel=cancel,
        )  # fmt: skip

    def adopt_hf_cache(
        self,
        cache_dir: Path | None = None,
        dry_run: bool = False,
        on_progress: Progress | None = None,
    ) -> list[dict[str, Any]]:
        """Hardlink the GGUFs of the HF cache (default: huggingface_hub's) into the store."""
        from llcuda_tui.core.store import _adopt

        return _adopt.adopt_hf_cache(self, cache_dir, dry_run, on_progress)

    def partial_bytes(self, repo: str, commit: str, remote_file: RemoteFile) -> int:
        """Bytes of a resumable partial download of ``remote_file`` already in the store."""
        from llcuda_tui.core.store import _pull

        return _pull.partial_bytes(self, repo, commit, remote_file)

    # -- upkeep --

    def verify(
        self,
        name: str | None = None,
        on_progress: Progress | None = None,
        on_file: OnFile | None = None,
    ) -> Report:
        """Re-hash every blob of ``name``'s model (all models when None); quarantine bad ones."""
        from llcuda_tui.core.store import _maint

        return _maint.verify(self, name, on_progress, on_file)

    def repair(
        self,
        dry_run: bool = False,
        on_progress: Progress | None = None,
        on_status: Status = _quiet,
    ) -> Report:
        """Re-fetch missing or quarantined blobs (only those), re-create views, drop dead names."""
        from llcuda_tui.core.store import _maint

        return _maint.repair(self, dry_run, on_progress, on_status)

    def gc(
        self, grace_s: float | None = None, dry_run: bool = False, partials: bool = False
    ) -> Report:
        """Delete what no name uses and is older than ``grace_s`` (None: ``GRACE_S``, an
        hour); ``partials``: resumable downloads too."""
        from llcuda_tui.core.store import _maint

        return _maint.gc(self, _maint.GRACE_S if grace_s is None else grace_s, dry_run, partials)

    def du(self) -> dict[str, Any]:
        """Bytes on disk (JSON-ready): per model (with what it shares), unreferenced, partial,
        quarantined, free, and the cap."""
        from llcuda_tui.core.store import _maint

        return _maint.du(self)

    # -- room --

    def remove(self, name: str, dry_run: bool = False, force: bool = False) -> Report:
        """Remove a name; when it was the model's last name, the model and its blobs go too."""
        from llcuda_tui.core.store import _space

        return _space.remove(self, name, dry_run, force)

    def enforce_cap(self, protect: set[str] | None = None, dry_run: bool = False) -> list[str]:
        """Evict least recently used models until the store is under ``max_size``; their names."""
        from llcuda_tui.core.store import _space

        return _space.enforce_cap(self, protect, dry_run)


# --- module-level API for the rest of the program ---------------------------------------------


def resolve_name(name: str, paths: Paths) -> tuple[Path, str] | None:
    """(file to load, sha256) for a store name or alias, or None when the store lacks it.

    Runs the quick integrity check (size, fingerprint, GGUF magic; a full re-hash when the
    fingerprint changed) and records the use for LRU eviction. A damaged model raises
    CorruptModelError (its bad blob is quarantined; ``llcuda models repair`` fixes it).
    """
    return Store(paths).resolve(name, record=True)


def record_use(name: str, paths: Paths) -> None:
    """Record that the engine loaded ``name`` now."""
    Store(paths).record_use(name)


def list_models(paths: Paths) -> list[ModelEntry]:
    """Every name in the store with its model (sorted by name)."""
    store = Store(paths)
    return store.entries() if store.exists() else []


@contextlib.contextmanager
def lease(name: str, paths: Paths) -> Iterator[ModelEntry]:
    """Hold ``name`` as in use (gc and eviction skip it) for the duration of the block."""
    with Store(paths).lease(name) as entry:
        yield entry


@contextlib.contextmanager
def lease_file(path: Path, paths: Paths) -> Iterator[set[str]]:
    """Hold the store models whose blob ``path`` is (a view or a blob) as in use by this
    process for the duration of the block: ``models rm`` refuses with this pid, gc and the
    size cap skip them. A file outside the store holds nothing. The digests held."""
    store = Store(paths)
    digests = store.digests_of_file(path)
    with store.hold(digests):
        yield digests
