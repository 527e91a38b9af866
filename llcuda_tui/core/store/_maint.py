"""Store upkeep: verify (full re-hash), repair, gc (mark and sweep), du, the size cap."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from llcuda_tui.core.config import Settings, save_setting
from llcuda_tui.core.errors import LlcudaError
from llcuda_tui.core.fmt import fmt_size, parse_size
from llcuda_tui.core.store import _fs as storefs
from llcuda_tui.core.store import _hub as hub
from llcuda_tui.core.store._base import INGESTING, StoreBase
from llcuda_tui.core.store._errors import StoreError
from llcuda_tui.core.store._fs import Progress, fingerprint, pid_alive, writer_pid
from llcuda_tui.core.store._hub import RemoteFile
from llcuda_tui.core.store._layout import SHA256_RE
from llcuda_tui.core.store._manifest import (
    HfSource,
    Manifest,
    ManifestFile,
    QuantizedSource,
    StarterSource,
)
from llcuda_tui.core.store._pull import Status, fetch_file, quiet
from llcuda_tui.core.store._records import Report
from llcuda_tui.core.store._starter import starter_path

OnFile = Callable[[str, int], None]
"""``on_file(file name, size)``: verify starts re-hashing this file."""
GRACE_S = 3600.0
"""Unreferenced blobs and manifests younger than this are kept by gc (a pull may be mid-way)."""
PARTIAL_MAX_AGE_S = 7 * 86400.0
"""A partial download is kept this long for a resume (``gc --partials`` drops it at once)."""


def _labels(names: dict[str, str]) -> dict[str, str]:
    """Digest -> the names that point at it, for messages."""
    out: dict[str, list[str]] = {}
    for n, d in names.items():
        out.setdefault(d, []).append(n)
    return {d: ", ".join(ns) for d, ns in out.items()}


# --- verify ----------------------------------------------------------------------------------


def verify(
    store: StoreBase,
    name: str | None = None,
    on_progress: Progress | None = None,
    on_file: OnFile | None = None,
) -> Report:
    """Re-hash every blob of the named models (all when ``name`` is None); quarantine bad ones."""
    report = Report()
    if not store.exists():
        return report
    names = store.names()
    if name is not None:
        stored = store.require(name)
        names = {stored: names[stored]}
    else:
        report.problems += _corrupt_manifest_files(store)
        report.problems += _stray_blobs(store)
    labels = _labels(names)
    known = store.index.manifests()
    seen: set[str] = set()
    for digest in sorted(set(names.values())):
        if digest not in known:
            report.problems.append(
                f"{labels[digest]}: manifest {digest[:12]} is missing or corrupt"
            )
            continue
        manifest = store.load_manifest(digest)
        for f in manifest.files:
            if f.sha256 not in seen:
                seen.add(f.sha256)
                _verify_blob(store, labels[digest], f, report, on_progress, on_file)
        report.problems += _view_problems(store, digest, manifest, labels[digest])
    return report


def _verify_blob(
    store: StoreBase,
    label: str,
    f: ManifestFile,
    report: Report,
    on_progress: Progress | None,
    on_file: OnFile | None,
) -> None:
    blob = store.layout.blob(f.sha256)
    if not blob.is_file():
        report.problems.append(f"{label}: {f.filename} is missing; run llcuda models repair")
        return
    if on_file is not None:
        on_file(f.filename, f.size)
    size = blob.stat().st_size
    seen = fingerprint(blob)
    digest = storefs.sha256_file(blob, on_progress) if size == f.size else ""
    report.checked_files += 1
    if digest != f.sha256:
        store.quarantine(f.sha256)
        report.problems.append(
            f"{label}: {f.filename} failed its sha256 check and was quarantined; "
            "run llcuda models repair"
        )
        return
    store.index.set_fingerprint(f.sha256, seen, time.time())


def _view_problems(store: StoreBase, digest: str, manifest: Manifest, label: str) -> list[str]:
    problems = []
    for f in manifest.files:
        link = store.layout.view_dir(digest) / f.filename
        target = store.layout.view_target(f.sha256)
        if not link.is_symlink() or Path(os.readlink(link)) != target:
            problems.append(f"{label}: view {f.filename} is missing; run llcuda models repair")
    return problems


def _corrupt_manifest_files(store: StoreBase) -> list[str]:
    problems = []
    for f in store.layout.manifests.glob("*.json"):
        try:
            ok = hashlib.sha256(f.read_bytes()).hexdigest() == f.stem
        except OSError:
            ok = False
        if not ok:
            problems.append(f"manifest file {f.name} does not match its name (corrupt)")
    return problems


def _stray_blobs(store: StoreBase) -> list[str]:
    return [
        f"stray file in blobs/: {f.name} (not a sha256 name; llcuda models gc removes it)"
        for f in store.layout.blobs.iterdir()
        if not SHA256_RE.match(f.name)
    ]


# --- repair ----------------------------------------------------------------------------------


def repair(
    store: StoreBase,
    dry_run: bool = False,
    on_progress: Progress | None = None,
    on_status: Status = quiet,
) -> Report:
    """Re-fetch missing or quarantined blobs (only those), re-create views, drop dead names."""
    report = Report()
    if not store.exists():
        return report
    names = store.names()
    known = store.index.manifests()
    for n, d in names.items():
        if d not in known:
            report.actions.append(f"remove name {n} (its manifest is gone; pull or import again)")
            if not dry_run:
                store.index.invalidate()
                store.layout.name_file(n).unlink(missing_ok=True)
    labels = _labels(names)
    for digest in sorted(set(names.values()) & set(known)):
        manifest = store.load_manifest(digest)
        for f in manifest.files:
            _repair_blob(
                store, labels[digest], manifest, f, report, dry_run, on_progress, on_status
            )
        if not dry_run and all(store.layout.blob(f.sha256).exists() for f in manifest.files):
            store.make_views(digest, manifest)
    if not dry_run:
        store.sync(force=True)
    return report


def _repair_blob(
    store: StoreBase,
    label: str,
    manifest: Manifest,
    f: ManifestFile,
    report: Report,
    dry_run: bool,
    on_progress: Progress | None,
    on_status: Status,
) -> None:
    blob = store.layout.blob(f.sha256)
    if blob.is_file():
        if blob.stat().st_size == f.size:
            return
        if not dry_run:
            store.quarantine(f.sha256)
    source = manifest.source
    report.actions.append(f"{label}: restore {f.filename} from {source.describe()}")
    if dry_run:
        return
    try:
        _restore(store, manifest, f, on_progress, on_status)
    except LlcudaError as exc:
        report.problems.append(f"{label}: cannot restore {f.filename}: {exc}")


def _restore(
    store: StoreBase,
    manifest: Manifest,
    f: ManifestFile,
    on_progress: Progress | None,
    on_status: Status,
) -> None:
    source = manifest.source
    if isinstance(source, HfSource):
        repo, commit = hub.check_repo_id(source.repo), source.commit
        rf = RemoteFile(hub.check_remote_path(f.path), f.size, f.sha256)
        with storefs.file_lock(store.layout.lock(f.sha256)):
            if not store.layout.blob(f.sha256).exists():
                fetch_file(store, repo, commit, rf, on_progress, on_status)
        return
    if isinstance(source, StarterSource):
        path = starter_path(source.name, store.paths)
    elif isinstance(source, QuantizedSource):
        raise StoreError(f"it was made here: quantize {source.source_name} to {source.type} again")
    else:
        path = Path(source.path)
        if not path.is_file() or path.stat().st_size != f.size:
            raise StoreError(f"the original file {path} is gone or changed")
    store.ingest_file(path, on_progress, expect=f.sha256)


# --- gc --------------------------------------------------------------------------------------


def gc(
    store: StoreBase, grace_s: float = GRACE_S, dry_run: bool = False, partials: bool = False
) -> Report:
    """Mark (names -> manifests -> blobs) and sweep what is unreferenced and older than grace."""
    report = Report()
    if not store.exists():
        return report
    named = set(store.names().values())
    kept = named | _sweep_manifests(store, named, grace_s, dry_run, report)
    live = _live_shas(store, kept, report)
    ingesting = store.users(INGESTING)
    if ingesting:
        report.actions.append(f"keep unreferenced blobs: process {ingesting[0]} is importing")
    elif live is not None:
        _sweep_blobs(store, live, grace_s, dry_run, report)
    _sweep_views_and_state(store, kept, dry_run, report)
    _sweep_tmp(store, grace_s, partials, dry_run, report)
    _sweep_old(store.layout.quarantine.iterdir(), grace_s, dry_run, report, "quarantined")
    _sweep_leases(store, dry_run)
    return report


def _sweep_manifests(
    store: StoreBase, named: set[str], grace_s: float, dry_run: bool, report: Report
) -> set[str]:
    """Remove unreferenced manifests past grace; the young ones (kept)."""
    young = set()
    for f in store.layout.manifests.glob("*.json"):
        digest = f.stem
        if digest in named:
            continue
        if storefs.age_s(f) < grace_s or store.users(digest):
            young.add(digest)
            continue
        report.actions.append(f"remove unreferenced manifest {digest[:12]}")
        if not dry_run:
            store.delete_manifest(digest)
    return young


def _live_shas(store: StoreBase, kept: set[str], report: Report) -> set[str] | None:
    """Blobs used by kept manifests; None (sweep nothing) when a kept manifest is unreadable."""
    live: set[str] = set()
    for digest in kept:
        try:
            manifest = store.load_manifest(digest)
        except StoreError:
            report.problems.append(
                f"manifest {digest[:12]} is unreadable: no blob swept (run llcuda models repair)"
            )
            return None
        live.update(f.sha256 for f in manifest.files)
    return live


def _sweep_blobs(
    store: StoreBase, live: set[str], grace_s: float, dry_run: bool, report: Report
) -> None:
    for blob in store.layout.blobs.iterdir():
        if blob.name in live or storefs.age_s(blob) < grace_s:
            continue
        if dry_run:
            size = blob.stat().st_size
            report.actions.append(f"delete blob {blob.name[:12]} ({fmt_size(size, 2)})")
            report.freed_bytes += size
        else:
            report.freed_bytes += store.delete_blob(blob.name, report)


def _sweep_views_and_state(store: StoreBase, kept: set[str], dry_run: bool, report: Report) -> None:
    for view in store.layout.views.iterdir():
        if view.name not in kept:
            report.actions.append(f"remove view {view.name[:12]}")
            if not dry_run:
                shutil.rmtree(view, ignore_errors=True)
    for state in store.layout.state.glob("*.json"):
        if state.stem not in kept:
            report.actions.append(f"remove state {state.stem[:12]}")
            if not dry_run:
                store.index.invalidate()
                state.unlink(missing_ok=True)
    if not dry_run:
        store.sync()


def _sweep_tmp(
    store: StoreBase, grace_s: float, partials: bool, dry_run: bool, report: Report
) -> None:
    """Partial downloads: kept for resume (PARTIAL_MAX_AGE_S) unless ``partials``; temps: grace."""
    for f in store.layout.tmp.iterdir():
        pid = writer_pid(f)
        if pid is not None and pid_alive(pid) and pid != os.getpid():
            continue
        is_download = f.suffix in (".part", ".json") and SHA256_RE.match(f.name.split(".")[0])
        # a temp whose writer died (kill -9) is garbage now, not after the grace period
        dead_writer = pid is not None and pid != os.getpid()
        limit = (0.0 if partials else PARTIAL_MAX_AGE_S) if is_download else grace_s
        if dead_writer and not is_download:
            limit = 0.0
        with contextlib.suppress(FileNotFoundError):
            if storefs.age_s(f) < limit:
                continue
            key = f.name.split(".")[0]
            lock = storefs.try_lock(store.layout.lock(key)) if is_download else None
            if is_download and lock is None:
                continue
            try:
                size = f.lstat().st_size
                report.actions.append(f"delete tmp/{f.name} ({fmt_size(size, 2)})")
                report.freed_bytes += size
                if not dry_run:
                    f.unlink()
            finally:
                if lock is not None:
                    lock.release()


def _sweep_old(
    files: Iterable[Path], grace_s: float, dry_run: bool, report: Report, what: str
) -> None:
    for f in files:
        with contextlib.suppress(FileNotFoundError):
            if storefs.age_s(f) < grace_s:
                continue
            size = f.stat().st_size
            report.actions.append(f"delete {what} {f.name[:24]} ({fmt_size(size, 2)})")
            report.freed_bytes += size
            if not dry_run:
                f.unlink()


def _sweep_leases(store: StoreBase, dry_run: bool) -> None:
    for f in store.layout.inuse.glob("*.lease"):
        pid = writer_pid(f)
        if (pid is None or not pid_alive(pid)) and not dry_run:
            f.unlink(missing_ok=True)


# --- du and the cap --------------------------------------------------------------------------


def set_max_size(settings: Settings, text: str) -> Settings:
    """Save ``text`` ('50GB', '200GiB'; '' = no cap) as ``store.max_size`` in the config file
    and return the updated Settings. It is checked first (one clear line if it is not a size);
    models are evicted only when a pull needs room, never here."""
    text = text.strip()
    parse_size(text)
    return save_setting(settings, "store", "max_size", text)


def du(store: StoreBase) -> dict[str, Any]:
    """Bytes on disk: per model (with what it shares), unreferenced, partial, quarantined."""
    empty = {"models": [], "blobs_bytes": 0, "live_bytes": 0, "unreferenced_bytes": 0}
    if not store.exists():
        return empty | {"partial_bytes": 0, "quarantine_bytes": 0, "max_size": store.max_size}
    sizes = store.blob_sizes()
    users = store.live_blobs()
    names = store.names()
    models = []
    for digest, label in _labels(names).items():
        shas = {s for s, u in users.items() if digest in u}
        size = sum(sizes.get(s, 0) for s in shas)
        own = sum(sizes.get(s, 0) for s in shas if users[s] == {digest})
        models.append(
            {
                "names": label.split(", "),
                "manifest": digest,
                "bytes": size,
                "shared_bytes": size - own,
            }
        )
    live = sum(sizes.get(s, 0) for s in users)
    return {
        "models": sorted(models, key=lambda m: -m["bytes"]),
        "blobs_bytes": sum(sizes.values()),
        "live_bytes": live,
        "unreferenced_bytes": sum(sizes.values()) - live,
        "partial_bytes": _dir_bytes(store.layout.tmp),
        "quarantine_bytes": _dir_bytes(store.layout.quarantine),
        "free_bytes": shutil.disk_usage(store.layout.root).free,
        "max_size": store.max_size,
    }


def _dir_bytes(path: Path) -> int:
    total = 0
    for f in path.iterdir():
        with contextlib.suppress(FileNotFoundError):
            st = f.lstat()
            # a hardlink to the user's own file (an import in progress or killed) takes no room
            total += st.st_size if st.st_nlink <= 1 else 0
    return total
