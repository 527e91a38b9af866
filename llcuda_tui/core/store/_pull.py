"""Hub pulls into the store: resumable, verified downloads of one model's files.

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
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from llcuda_tui.core.errors import PullCancelled, UserInputError
from llcuda_tui.core.fmt import fmt_size
from llcuda_tui.core.store import _fs as storefs
from llcuda_tui.core.store import _hub as hub
from llcuda_tui.core.store._base import INGESTING, StoreBase
from llcuda_tui.core.store._errors import IntegrityError, StoreFullError
from llcuda_tui.core.store._fs import Progress, pid_alive, unlink_quietly, writer_pid
from llcuda_tui.core.store._hub import HubNotFoundError, RemoteFile, RemoteModel, RepoListing
from llcuda_tui.core.store._layout import check_name
from llcuda_tui.core.store._manifest import HfSource, ManifestFile
from llcuda_tui.core.store._records import ModelEntry, PullResult, Report
from llcuda_tui.core.store._space import check_space, enforce_cap

Status = Callable[[str], None]
"""``on_status(message)``: one line saying what a pull does now (waiting, resuming, ...)."""
MAX_TRANSFER_RETRIES = 3
STALE_PARTIAL_S = 30.0
"""A partial download whose writer is alive is taken over only after this long without writes."""
_ACTIVE: set[Path] = set()
"""Partial files this process is writing now (others of its pid are free to take over)."""
_ACTIVE_LOCK = threading.Lock()


def quiet(_: str) -> None:
    """An ``on_status`` that says nothing."""
    return None


# --- pull ------------------------------------------------------------------------------------


def pull(
    store: StoreBase,
    repo: str,
    *,
    file: str | None = None,
    quant: str | None = None,
    revision: str | None = None,
    name: str | None = None,
    on_progress: Progress | None = None,
    on_status: Status = quiet,
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
    source = HfSource(repo, commit, revision or "main")
    store.ensure()
    existing = store.lookup(primary)
    old_digest = store.names()[existing] if existing else None
    current = up_to_date(store, existing, commit, model)
    if current is not None:
        if name and store.lookup(name) != name:
            store.publish(current.manifest, [name])
        return PullResult(store.entry(primary), up_to_date=True)
    with ExitStack() as held:
        held.enter_context(store.hold({INGESTING}))  # gc keeps new blobs until published
        for f in sorted(model.files, key=partial_key_of(repo, commit)):
            held.enter_context(_blob_lock(store, partial_key(repo, commit, f), f.path, on_status))
        files, downloaded, reused = _fetch_all(
            store, repo, commit, model, existing, on_progress, on_status, cancel
        )
        manifest = store.build_manifest(source, files)
        store.publish(manifest, names)
    _drop_replaced(store, old_digest, manifest.digest)
    evicted = enforce_cap(store, protect={manifest.digest})
    return PullResult(store.entry(primary), downloaded, reused, False, tuple(evicted))


def _fetch_all(
    store: StoreBase,
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
    check_space(store, pending, protect=existing)
    files, downloaded = [], 0
    for i, f in enumerate(model.files):
        role = "model" if i == 0 else "shard"
        if f in missing:
            on_status(f"downloading {f.path} ({fmt_size(f.size, 2)})")
            sha, n = fetch_file(store, repo, commit, f, on_progress, on_status, cancel)
            downloaded += n
        else:
            sha = str(f.sha256)
            store.keep_blob(sha)
        files.append(ManifestFile(role, f.path, sha, f.size))
    return files, downloaded, len(model.files) - len(missing)


def _drop_replaced(store: StoreBase, old_digest: str | None, new_digest: str) -> None:
    """After an update, the previous version goes unless another name still uses it."""
    if old_digest is None or old_digest == new_digest:
        return
    if old_digest not in store.names().values():
        store.drop_model(old_digest, Report())


def up_to_date(
    store: StoreBase, existing: str | None, commit: str, model: RemoteModel
) -> ModelEntry | None:
    """The entry of stored name ``existing`` if it holds ``model`` at ``commit``, blobs and all."""
    if existing is None:
        return None
    entry = store.entry(existing)
    m = entry.manifest
    commit_of = m.source.commit if isinstance(m.source, HfSource) else None
    same = commit_of == commit and [(f.path, f.sha256) for f in m.files] == [
        (f.path, f.sha256) for f in model.files
    ]
    if same and all(store.layout.blob(f.sha256).exists() for f in m.files):
        return entry
    return None


def _pull_offline(
    store: StoreBase, repo: str, file: str | None, quant: str | None, name: str | None
) -> PullResult:
    """With HF_HUB_OFFLINE: succeed only when the store already has the model."""
    found: dict[str, ModelEntry] = {}
    for e in store.entries():
        m = e.manifest
        if not isinstance(m.source, HfSource) or m.source.repo != repo:
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
def _blob_lock(store: StoreBase, key: str, label: str, on_status: Status) -> Iterator[None]:
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
    store: StoreBase,
    repo: str,
    commit: str,
    f: RemoteFile,
    on_progress: Progress | None = None,
    on_status: Status = quiet,
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
                f"disk full while downloading {f.path} ({fmt_size(done, 2)} of "
                f"{fmt_size(f.size, 2)}); the partial file is kept in {store.layout.tmp} and the "
                "next pull resumes it"
            ) from None
        raise storefs.os_error(exc, f"cannot write the download of {f.path}") from None
    except IntegrityError:
        unlink_quietly(part)
        unlink_quietly(state)
        raise
    finally:
        if partial is not None:
            partial.close()
        with _ACTIVE_LOCK:
            _ACTIVE.discard(part)
    unlink_quietly(part)
    unlink_quietly(state)
    return sha, downloaded


def _claim_partial(store: StoreBase, key: str) -> Path:
    """Take over a partial download of ``key`` left by a dead process, or start a new one."""
    tmp = store.layout.tmp
    new = tmp / f"{key}.{storefs.unique_suffix()}.part"
    with _ACTIVE_LOCK:
        for old in sorted(tmp.glob(f"{key}.*.part"), key=_size_or_zero, reverse=True):
            if not _abandoned(old):
                continue  # its writer may still be at work
            with contextlib.suppress(FileNotFoundError):
                os.rename(old, new)
                unlink_quietly(old.with_suffix(".json"))
                _ACTIVE.add(new)
                return new
        os.close(os.open(new, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        _ACTIVE.add(new)
        return new


def _abandoned(part: Path) -> bool:
    """True when no live writer can be behind ``part`` (dead pid, or idle for long)."""
    pid = writer_pid(part)
    if pid == os.getpid():
        return part not in _ACTIVE
    try:
        return pid is None or not pid_alive(pid) or storefs.age_s(part) >= STALE_PARTIAL_S
    except FileNotFoundError:
        return False


def _size_or_zero(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _partial_size(store: StoreBase, key: str) -> int:
    return max((_size_or_zero(p) for p in store.layout.tmp.glob(f"{key}.*.part")), default=0)


def partial_bytes(store: StoreBase, repo: str, commit: str, remote_file: RemoteFile) -> int:
    """Bytes of a resumable partial download of ``remote_file`` already in the store."""
    with contextlib.suppress(OSError):
        return _partial_size(store, partial_key(repo, commit, remote_file))
    return 0


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
            on_status(f"resuming {f.path} at {fmt_size(offset, 2)} (re-hashed the partial file)")
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
            f"{f.path} from {repo} is corrupt: got {fmt_size(partial.size, 2)} with sha256 "
            f"{got[:12]}, the Hub lists {fmt_size(f.size, 2)} with {expected[:16]}; "
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
            f"pull of {partial.file.path} cancelled at {fmt_size(partial.size, 2)}: "
            "pull it again to resume"
        )
