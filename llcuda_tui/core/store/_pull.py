"""Bringing models into the store: Hub pulls (resumable), the HF cache, the starter models.

A download lands in ``tmp/<key>.<pid>-<rand>.part`` (key: the file's LFS sha256) next to a
small ``.json`` state file. It is hashed as it streams; after a kill the next pull takes the
partial over (rename), re-hashes it and asks for the rest with a Range request, or starts
clean when the server answers with the whole file. Only a file whose size and sha256 match
the Hub's listing is published: fsync, chmod read-only, link into ``blobs/``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from llcuda_tui.core.errors import PullCancelled, UserInputError
from llcuda_tui.core.store import _fs as storefs
from llcuda_tui.core.store import _hub as hub
from llcuda_tui.core.store._fs import IntegrityError, Progress, StoreError, StoreFullError
from llcuda_tui.core.store._hub import HubNotFoundError, RemoteFile, RemoteModel, RepoListing
from llcuda_tui.core.store._store import (
    STALE_PARTIAL_S,
    ManifestFile,
    ModelEntry,
    PullResult,
    Report,
    Store,
    _pid_alive,
    _pid_of,
    _silent_unlink,
    check_name,
    fmt_bytes,
)

Status = Callable[[str], None]
MAX_TRANSFER_RETRIES = 3
_ACTIVE: set[Path] = set()
"""Partial files this process is writing now (others of its pid are free to take over)."""
_ACTIVE_LOCK = threading.Lock()


def _quiet(_: str) -> None:
    return None


# --- pull ------------------------------------------------------------------------------------


def pull(
    store: Store,
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
    """Download one model of ``repo`` (by ``file`` or ``quant``) into the store.

    Setting ``cancel`` (from any thread) stops the download within one chunk with
    :class:`PullCancelled`; the partial file stays and the next pull resumes it."""
    hub.check_repo_id(repo)
    if file:
        hub.check_remote_path(file)
    if name:
        check_name(name)
    if hub.is_offline():
        return _pull_offline(store, repo, file, quant, name)
    commit = hub.resolve_commit(repo, revision)
    model = select_model(hub.list_models(repo, commit), file, quant)
    primary = check_name(f"{repo}:{model.quant}")
    names = [primary] + ([name] if name and name != primary else [])
    source = {"kind": "hf", "repo": repo, "revision": revision or "main", "commit": commit}
    store.ensure()
    existing = store.lookup(primary)
    old_digest = store.names()[existing] if existing else None
    current = _up_to_date(store, existing, commit, model)
    if current is not None:
        if name and store.lookup(name) != name:
            store.publish(current.manifest, [name])
        return PullResult(store.entry(primary), up_to_date=True)
    with ExitStack() as held:
        for f in sorted(model.files, key=partial_key_of(repo, commit)):
            held.enter_context(_blob_lock(store, partial_key(repo, commit, f), f.path, on_status))
        files, downloaded, reused = _fetch_all(
            store, repo, commit, model, existing, on_progress, on_status, cancel
        )
        manifest = store._manifest(source, files)
        store.publish(manifest, names)
    _drop_replaced(store, old_digest, manifest.digest)
    evicted = store.enforce_cap(protect={manifest.digest})
    return PullResult(store.entry(primary), downloaded, reused, False, tuple(evicted))


def _fetch_all(
    store: Store,
    repo: str,
    commit: str,
    model: RemoteModel,
    existing: str | None,
    on_progress: Progress | None,
    on_status: Status,
    cancel: threading.Event | None = None,
) -> tuple[list[ManifestFile], int, int]:
    missing = [f for f in model.files if not (f.sha256 and store.layout.blob(f.sha256).exists())]
    pending = sum(f.size - _partial_size(store, partial_key(repo, commit, f)) for f in missing)
    store._check_space(pending, protect=existing)
    files, downloaded = [], 0
    for i, f in enumerate(model.files):
        role = "model" if i == 0 else "shard"
        if f in missing:
            on_status(f"downloading {f.path} ({fmt_bytes(f.size)})")
            sha, n = fetch_file(store, repo, commit, f, on_progress, on_status, cancel)
            downloaded += n
        else:
            sha = str(f.sha256)
            store.keep_blob(sha)
        files.append(ManifestFile(role, f.path, sha, f.size))
    return files, downloaded, len(model.files) - len(missing)


def _drop_replaced(store: Store, old_digest: str | None, new_digest: str) -> None:
    """After an update, the previous version goes unless another name still uses it."""
    if old_digest is None or old_digest == new_digest:
        return
    if old_digest not in store.names().values():
        store._drop_model(old_digest, Report())


def _up_to_date(
    store: Store, existing: str | None, commit: str, model: RemoteModel
) -> ModelEntry | None:
    if existing is None:
        return None
    entry = store.entry(existing)
    m = entry.manifest
    same = m.source.get("commit") == commit and [(f.path, f.sha256) for f in m.files] == [
        (f.path, f.sha256) for f in model.files
    ]
    if same and all(store.layout.blob(f.sha256).exists() for f in m.files):
        return entry
    return None


def _pull_offline(
    store: Store, repo: str, file: str | None, quant: str | None, name: str | None
) -> PullResult:
    """With HF_HUB_OFFLINE: succeed only when the store already has the model."""
    found: dict[str, ModelEntry] = {}
    for e in store.entries():
        m = e.manifest
        if m.source.get("kind") != "hf" or m.source.get("repo") != repo:
            continue
        if file and all(f.path != file for f in m.files):
            continue
        if (
            quant
            and m.quant.upper() != quant.upper()
            and not e.name.upper().endswith(":" + quant.upper())
        ):
            continue
        found.setdefault(e.digest, e)
    if len(found) != 1:
        what = repo + (f":{quant}" if quant else "") + (f" {file}" if file else "")
        why = "is not in the store" if not found else "matches several stored models"
        raise hub.OfflineError(f"HF_HUB_OFFLINE is set and {what} {why}")
    entry = next(iter(found.values()))
    if name and store.lookup(name) != name:
        store.publish(entry.manifest, [name])
    return PullResult(entry, up_to_date=True)


def select_model(listing: RepoListing, file: str | None, quant: str | None) -> RemoteModel:
    """The one model the user asked for, or an error that lists the choices."""
    models = listing.models
    if not models:
        raise HubNotFoundError(f"{listing.repo} has no GGUF files at {listing.commit[:12]}")
    choices = ", ".join(dict.fromkeys(m.quant for m in models))
    if file:
        chosen = [m for m in models if any(f.path == file for f in m.files)]
        if not chosen:
            raise HubNotFoundError(f"no GGUF file {file} in {listing.repo} (quants: {choices})")
    elif quant:
        chosen = [m for m in models if m.quant.upper() == quant.upper()]
        if not chosen:
            raise HubNotFoundError(f"no {quant} GGUF in {listing.repo} (quants: {choices})")
        if len(chosen) > 1:
            paths = ", ".join(m.first.path for m in chosen)
            raise UserInputError(
                f"several {quant} files in {listing.repo}: pick one with --file ({paths})"
            )
    elif len(models) == 1:
        chosen = list(models)
    else:
        raise UserInputError(
            f"{listing.repo} has {len(models)} GGUF models: choose --quant ({choices}) or --file"
        )
    model = chosen[0]
    if not model.complete:
        raise hub.HubError(f"split model {model.first.path} in {listing.repo} is missing shards")
    return model


# --- one file --------------------------------------------------------------------------------


def partial_key(repo: str, commit: str, f: RemoteFile) -> str:
    """Names the partial download and the lock of ``f``: its sha256, else a hash of where it is."""
    if f.sha256:
        return f.sha256
    return hashlib.sha256(f"{repo}\0{commit}\0{f.path}".encode()).hexdigest()


def partial_key_of(repo: str, commit: str) -> Callable[[RemoteFile], str]:
    return lambda f: partial_key(repo, commit, f)


@contextmanager
def _blob_lock(store: Store, key: str, label: str, on_status: Status) -> Iterator[None]:
    path = store.layout.lock(key)
    lock = storefs.try_lock(path)
    if lock is not None:
        try:
            yield
        finally:
            lock.release()
        return
    on_status(f"waiting for another llcuda process that is fetching {label}")
    with storefs.file_lock(path):
        yield


def fetch_file(
    store: Store,
    repo: str,
    commit: str,
    f: RemoteFile,
    on_progress: Progress | None = None,
    on_status: Status = _quiet,
    cancel: threading.Event | None = None,
) -> tuple[str, int]:
    """Download ``f`` into ``blobs/`` (caller holds its lock); (sha256, bytes downloaded).
    ``cancel`` set: :class:`PullCancelled`, keeping the partial file for a resume."""
    hub.check_remote_path(f.path)
    meta = hub.file_metadata(repo, commit, f.path)
    if meta.size is not None and meta.size != f.size:
        raise IntegrityError(
            f"{f.path}: the server offers {meta.size} bytes, the Hub's listing says {f.size}; "
            "nothing was stored"
        )
    key = partial_key(repo, commit, f)
    part = _claim_partial(store, key)
    state = part.with_suffix(".json")
    record = {"repo": repo, "commit": commit, "path": f.path, "size": f.size,
              "sha256": f.sha256, "etag": meta.etag, "started": time.time()}  # fmt: skip
    partial: _Partial | None = None
    try:
        storefs.atomic_write_json(state, record, store.layout.tmp)
        partial = _Partial(part, f)
        sha, downloaded = _download(partial, repo, commit, on_progress, on_status, cancel)
        partial.close()
        store.publish_blob(part, sha, locked=True)
    except OSError as exc:
        if storefs.is_disk_full(exc):
            done = partial.size if partial else 0
            raise StoreFullError(
                f"disk full while downloading {f.path} ({fmt_bytes(done)} of "
                f"{fmt_bytes(f.size)}); the partial file is kept in {store.layout.tmp} and the "
                "next pull resumes it"
            ) from None
        raise storefs.os_error(exc, f"cannot write the download of {f.path}") from None
    except IntegrityError:
        _silent_unlink(part)
        _silent_unlink(state)
        raise
    finally:
        if partial is not None:
            partial.close()
        with _ACTIVE_LOCK:
            _ACTIVE.discard(part)
    _silent_unlink(part)
    _silent_unlink(state)
    return sha, downloaded


def _claim_partial(store: Store, key: str) -> Path:
    """Take over a partial download of ``key`` left by a dead process, or start a new one."""
    tmp = store.layout.tmp
    new = tmp / f"{key}.{storefs.unique_suffix()}.part"
    with _ACTIVE_LOCK:
        for old in sorted(tmp.glob(f"{key}.*.part"), key=_size_or_zero, reverse=True):
            if not _abandoned(old):
                continue  # its writer may still be at work
            with contextlib.suppress(FileNotFoundError):
                os.rename(old, new)
                _silent_unlink(old.with_suffix(".json"))
                _ACTIVE.add(new)
                return new
        os.close(os.open(new, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        _ACTIVE.add(new)
        return new


def _abandoned(part: Path) -> bool:
    """True when no live writer can be behind ``part`` (dead pid, or idle for long)."""
    pid = _pid_of(part)
    if pid == os.getpid():
        return part not in _ACTIVE
    try:
        return pid is None or not _pid_alive(pid) or storefs.age_s(part) >= STALE_PARTIAL_S
    except FileNotFoundError:
        return False


def _size_or_zero(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _partial_size(store: Store, key: str) -> int:
    return max((_size_or_zero(p) for p in store.layout.tmp.glob(f"{key}.*.part")), default=0)


class _Hashes:
    """sha256, plus the git blob sha1 when the file is not in LFS (that is what the Hub lists)."""

    def __init__(self, f: RemoteFile) -> None:
        self.sha256 = hashlib.sha256()
        self.git = hashlib.sha1(f"blob {f.size}\0".encode()) if f.git_oid else None

    def update(self, data: bytes | memoryview) -> None:
        self.sha256.update(data)
        if self.git is not None:
            self.git.update(data)


class _Partial:
    """The partial file being written, its size and running hashes."""

    def __init__(self, path: Path, f: RemoteFile) -> None:
        self.path = path
        self.file = f
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        self.size = 0
        self.hashes = _Hashes(f)

    def rehash(self, on_progress: Progress | None) -> int:
        """Hash what is on disk already (after a restart); its size."""
        self.hashes = _Hashes(self.file)
        size = os.fstat(self.fd).st_size
        if size > self.file.size:
            self.truncate()
            return 0
        if size:
            storefs.hash_file(self.path, on_progress, limit=size, hasher=self.hashes)
        self.size = size
        return size

    def truncate(self) -> None:
        os.ftruncate(self.fd, 0)
        self.size = 0
        self.hashes = _Hashes(self.file)

    def append(self, chunk: bytes) -> None:
        if self.size + len(chunk) > self.file.size:
            raise IntegrityError(
                f"{self.file.path}: the server sent more than the {self.file.size} bytes the Hub "
                "lists; nothing was stored"
            )
        storefs.write_all(self.fd, chunk)
        self.hashes.update(chunk)
        self.size += len(chunk)

    def matches(self) -> bool:
        f = self.file
        if self.size != f.size:
            return False
        if f.sha256:
            return self.hashes.sha256.hexdigest() == f.sha256
        return self.hashes.git is not None and self.hashes.git.hexdigest() == f.git_oid

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _download(
    partial: _Partial,
    repo: str,
    commit: str,
    on_progress: Progress | None,
    on_status: Status,
    cancel: threading.Event | None = None,
) -> tuple[str, int]:
    f = partial.file
    restarted, retries, downloaded = False, 0, 0
    while True:
        _check_cancel(cancel, partial)
        offset = partial.rehash(None)
        if offset:
            on_status(f"resuming {f.path} at {fmt_bytes(offset)} (re-hashed the partial file)")
        try:
            downloaded += _stream(partial, repo, commit, offset, on_progress, on_status, cancel)
        except hub.HubTransferError as exc:
            retries += 1
            if retries > MAX_TRANSFER_RETRIES:
                raise hub.HubError(
                    f"download of {f.path} failed: {exc}; run the pull again to resume"
                ) from None
            on_status(f"{exc}; retrying ({retries}/{MAX_TRANSFER_RETRIES})")
            time.sleep(0.5 * retries)
            continue
        os.fsync(partial.fd)
        if partial.matches():
            return partial.hashes.sha256.hexdigest(), downloaded
        if offset and not restarted:
            restarted = True
            on_status(
                f"{f.path} does not match after resuming: downloading it again from the start"
            )
            partial.truncate()
            continue
        expected = f.sha256 or f"git {f.git_oid}"
        got = partial.hashes.sha256.hexdigest()
        raise IntegrityError(
            f"{f.path} from {repo} is corrupt: got {fmt_bytes(partial.size)} with sha256 "
            f"{got[:12]}, the Hub lists {fmt_bytes(f.size)} with {expected[:16]}; "
            "nothing was stored"
        )


def _stream(
    partial: _Partial,
    repo: str,
    commit: str,
    offset: int,
    on_progress: Progress | None,
    on_status: Status,
    cancel: threading.Event | None = None,
) -> int:
    f = partial.file
    if offset >= f.size:
        return 0
    received = 0
    with hub.open_download(repo, commit, f.path, offset) as dl:
        if dl.start != offset:
            on_status("the server ignored the Range request: downloading from the start")
            partial.truncate()
        if dl.total is not None and dl.total != f.size:
            raise IntegrityError(
                f"{f.path}: the server offers {dl.total} bytes, the Hub lists {f.size}; "
                "nothing was stored"
            )
        for chunk in dl.chunks:
            partial.append(chunk)
            received += len(chunk)
            if on_progress is not None:
                on_progress(partial.size, f.size)
            _check_cancel(cancel, partial)
    return received


def _check_cancel(cancel: threading.Event | None, partial: _Partial) -> None:
    if cancel is not None and cancel.is_set():
        raise PullCancelled(
            f"pull of {partial.file.path} cancelled at {fmt_bytes(partial.size)}: "
            "pull it again to resume"
        )


# --- the HF cache and the starter models -------------------------------------------------------


def hf_cache_dir() -> Path:
    """Where huggingface_hub keeps its cache (HF_HUB_CACHE, HF_HOME/hub, ~/.cache/...)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface"
    )
    return Path(home).expanduser() / "hub"


def adopt_hf_cache(
    store: Store,
    cache_dir: Path | None = None,
    dry_run: bool = False,
    on_progress: Progress | None = None,
) -> list[dict[str, Any]]:
    """Hardlink the GGUFs of the HF cache into the store, each verified by its hash."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    cache = Path(cache_dir) if cache_dir else hf_cache_dir()
    try:
        info = scan_cache_dir(cache)
    except CacheNotFound:
        raise UserInputError(f"no Hugging Face cache at {cache}") from None
    store.ensure()
    results = []
    for repo in sorted(info.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        # a revision a ref (main) points at comes last, so its files win the name
        for rev in sorted(repo.revisions, key=lambda r: (bool(r.refs), r.last_modified)):
            for model, blobs in _cached_models(rev):
                results.append(
                    _adopt_one(store, repo.repo_id, rev, model, blobs, dry_run, on_progress)
                )
    return results


def _cached_models(rev: Any) -> list[tuple[RemoteModel, dict[str, Path]]]:
    files, blobs = [], {}
    for cf in rev.files:
        rel = Path(cf.file_path).relative_to(rev.snapshot_path).as_posix()
        if not rel.lower().endswith(".gguf"):
            continue
        try:
            hub.check_remote_path(rel)
        except UserInputError:
            continue
        blob_name = Path(cf.blob_path).name
        sha = blob_name if re.fullmatch(r"[0-9a-f]{64}", blob_name) else None
        git = blob_name if sha is None and re.fullmatch(r"[0-9a-f]{40}", blob_name) else None
        files.append(RemoteFile(rel, int(cf.size_on_disk), sha, git))
        blobs[rel] = Path(cf.blob_path)
    return [(m, blobs) for m in hub.group_models(files)]


def _adopt_one(
    store: Store,
    repo_id: str,
    rev: Any,
    model: RemoteModel,
    blobs: dict[str, Path],
    dry_run: bool,
    on_progress: Progress | None,
) -> dict[str, Any]:
    name = f"{repo_id}:{model.quant}"
    result: dict[str, Any] = {"name": name, "commit": rev.commit_hash, "size": model.size}
    existing = store.lookup(name)
    if not model.complete:
        return result | {"status": "skipped: shards are missing from the cache"}
    if existing and _up_to_date(store, existing, rev.commit_hash, model):
        return result | {"status": "already in the store"}
    if any(blobs[f.path].stat().st_dev != store.layout.blobs.stat().st_dev for f in model.files):
        return result | {"status": "skipped: on another filesystem (llcuda models import copies)"}
    if dry_run:
        return result | {"status": "would adopt"}
    try:
        check_name(name)
        files = []
        for i, f in enumerate(model.files):
            if f.git_oid:
                _check_git_oid(blobs[f.path], f)
            sha = store.ingest_file(blobs[f.path], on_progress, expect=f.sha256, link_only=True)
            files.append(ManifestFile("model" if i == 0 else "shard", f.path, sha, f.size))
        refs = sorted(rev.refs)
        source = {
            "kind": "hf",
            "repo": repo_id,
            "revision": refs[0] if refs else rev.commit_hash,
            "commit": rev.commit_hash,
            "adopted_from": "hf-cache",
        }
        store.publish(store._manifest(source, files), [name])
    except (IntegrityError, StoreError, UserInputError) as exc:
        return result | {"status": f"skipped: {exc}"}
    return result | {"status": "adopted"}


def _check_git_oid(path: Path, f: RemoteFile) -> None:
    h = storefs.hash_file(path, hasher=hashlib.sha1(f"blob {f.size}\0".encode()))
    if h.hexdigest() != f.git_oid:
        raise IntegrityError(f"{f.path} in the HF cache does not match its git id")


def import_starters(store: Store, on_progress: Progress | None = None) -> list[ModelEntry]:
    """Make each starter model an ordinary store entry named after it (hardlinked)."""
    from llcuda_tui.core.store._starter import STARTERS, starter_path

    entries = []
    for name, model in STARTERS.items():
        path = starter_path(name, store.paths)
        source = {"kind": "starter", "name": name, "package": model.package}
        entry = store.import_path(path, name=name, source=source, on_progress=on_progress)
        if model.sha256 and entry.sha256 != model.sha256:
            raise IntegrityError(f"starter model {name} does not match its published sha256")
        entries.append(entry)
    return entries
