"""Local GGUF files into the store: ``llcuda models import`` (hardlinked, or copied across
filesystems; every shard of a split model) and ``llcuda models starter`` (the starter models,
hardlinked from their packages)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from llcuda_tui.core.errors import ModelLoadError, UserInputError
from llcuda_tui.core.gguf import has_gguf_magic, split_info
from llcuda_tui.core.store import _fs as storefs
from llcuda_tui.core.store._base import INGESTING, StoreBase
from llcuda_tui.core.store._errors import IntegrityError
from llcuda_tui.core.store._fs import Progress
from llcuda_tui.core.store._layout import check_name
from llcuda_tui.core.store._manifest import FileSource, ManifestFile, Source, StarterSource
from llcuda_tui.core.store._records import ModelEntry
from llcuda_tui.core.store._space import check_space, enforce_cap
from llcuda_tui.core.store._starter import STARTERS, starter_path


def import_path(
    store: StoreBase,
    path: Path,
    name: str | None = None,
    source: Source | None = None,
    on_progress: Progress | None = None,
    on_evict: Callable[[str], None] | None = None,
) -> ModelEntry:
    """Import a local GGUF (all shards when it is one shard of a split model); ``on_evict``
    hears each name the size cap evicted to make room."""
    shards = local_shards(path)
    # an empty --name is an error, not the default name
    name = check_name(default_import_name(shards[0]) if name is None else name)
    source = source or FileSource(str(shards[0].resolve()))
    existing = store.lookup(name)
    if existing is not None and _same_files(store, existing, shards):
        return store.entry(existing)
    check_space(store, sum(p.stat().st_size for p in shards), protect=existing)
    files = []
    with store.hold({INGESTING}):  # gc (even --grace 0) keeps the new blobs until published
        for i, shard in enumerate(shards):
            sha = store.ingest_file(shard, on_progress)
            files.append(
                ManifestFile("model" if i == 0 else "shard", shard.name, sha, shard.stat().st_size)
            )
        manifest = store.build_manifest(source, files)
        store.publish(manifest, [name])
    for evicted in enforce_cap(store, protect={manifest.digest}):
        if on_evict is not None:
            on_evict(evicted)
    return store.entry(name)


def _same_files(store: StoreBase, name: str, shards: Sequence[Path]) -> bool:
    """True when ``name`` already holds exactly these files (checked by inode, else hash)."""
    entry = store.entry(name)
    if len(entry.manifest.files) != len(shards):
        return False
    for f, shard in zip(entry.manifest.files, shards, strict=True):
        blob = store.layout.blob(f.sha256)
        if not blob.exists() or shard.stat().st_size != f.size:
            return False
        if not os.path.samefile(blob, shard) and storefs.sha256_file(shard) != f.sha256:
            return False
    return True


def local_shards(path: Path) -> list[Path]:
    """``path``, or every shard of the split model ``path`` is a shard of, in order."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserInputError(f"not a file: {path}")
    info = split_info(path.name)
    shards = [path]
    if info is not None:
        prefix, _, count = info
        shards = [
            path.with_name(f"{prefix}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)
        ]
        missing = [s.name for s in shards if not s.is_file()]
        if missing:
            raise UserInputError(f"split model {prefix} is missing shards: {', '.join(missing)}")
    for shard in shards:
        if not has_gguf_magic(shard):
            raise ModelLoadError(f"{shard} is not a GGUF file (bad magic)")
    return shards


def default_import_name(path: Path) -> str:
    """The store name of an imported file: its name without '.gguf' (or the split suffix)."""
    info = split_info(path.name)
    stem = info[0] if info else path.name.removesuffix(".gguf")
    return re.sub(r"[^A-Za-z0-9._\-+@]", "-", stem).lstrip("._-") or "model"


def import_starters(store: StoreBase, on_progress: Progress | None = None) -> list[ModelEntry]:
    """Make each starter model an ordinary store entry named after it (hardlinked)."""
    entries = []
    for name, model in STARTERS.items():
        path = starter_path(name, store.paths)
        source = StarterSource(name, model.package)
        entry = import_path(store, path, name=name, source=source, on_progress=on_progress)
        if model.sha256 and entry.sha256 != model.sha256:
            raise IntegrityError(f"starter model {name} does not match its published sha256")
        entries.append(entry)
    return entries


STARTERS_ADOPTED = "starters-adopted"
"""A file in the data dir once the starter models were made store entries at a first run:
they are not brought back after the user deleted them."""


def adopt_starters_once(store: StoreBase) -> list[ModelEntry] | None:
    """At a first run: make the installed starter models store entries (hardlinked), so the
    store lists what the pickers offer. None when that was done before (a later run, or the
    user deleted them since); the entries otherwise (none when no starter is installed).
    Raises ``LlcudaError`` (the next run tries again)."""
    from llcuda_tui.core import files
    from llcuda_tui.core.store._starter import installed_starters

    paths = store.paths
    marker = paths.data_dir / STARTERS_ADOPTED
    if marker.exists():
        return None
    entries = []
    for name, path in installed_starters(paths).items():
        if store.lookup(name) is not None:
            continue
        model = STARTERS[name]
        entry = import_path(store, path, name=name, source=StarterSource(name, model.package))
        if model.sha256 and entry.sha256 != model.sha256:
            raise IntegrityError(f"starter model {name} does not match its published sha256")
        entries.append(entry)
    paths.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        files.replace_file(marker, b"the starter models were made store entries\n", paths.data_dir)
    except OSError as exc:
        raise IntegrityError(f"cannot write {marker}: {exc.strerror or exc}") from None
    return entries
