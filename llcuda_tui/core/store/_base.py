"""The store's files and index: reading names and manifests, the quick integrity check,
state and leases, publishing blobs and manifests, and deleting them.

:class:`StoreBase` is what every verb is built on (import, pull, verify, repair, gc, the cap);
:class:`~llcuda_tui.core.store._store.Store` adds those verbs as methods. Every method is
safe across processes: writers clear the index's stamp before they touch the files, and the
next reader rebuilds it (see ``_index.py``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import quote

from llcuda_tui.core.config import Paths
from llcuda_tui.core.errors import ModelNotFoundError
from llcuda_tui.core.fmt import fmt_size
from llcuda_tui.core.store import _fs as storefs
from llcuda_tui.core.store._errors import CorruptModelError, IntegrityError, StoreError
from llcuda_tui.core.store._fs import (
    Progress,
    atomic_write_json,
    fingerprint,
    fsync_dir,
    os_error,
    pid_alive,
    read_json,
    unique_suffix,
    unlink_quietly,
    writer_pid,
)
from llcuda_tui.core.store._index import Snapshot, StoreIndex
from llcuda_tui.core.store._layout import SHA256_RE, Layout, check_name
from llcuda_tui.core.store._manifest import Manifest, ManifestFile, Source, iso_utc
from llcuda_tui.core.store._records import ModelEntry, ModelState, Report

INGESTING = "ingesting"
"""The lease key an import or a pull holds until its manifest is published: while a live
process holds it, gc sweeps no unreferenced blob (a new blob has no name yet)."""


class StoreBase:
    """The model store under ``paths.store_dir``: its files, its index, and the primitives the
    verbs share. ``max_size`` is the cap (bytes; None: no cap) that imports and pulls keep."""

    def __init__(self, paths: Paths, max_size: int | None = None) -> None:
        self.paths = paths
        self.layout = Layout(paths.store_dir)
        self.max_size = max_size
        self._index: StoreIndex | None = None

    # -- files and index --

    def exists(self) -> bool:
        return self.layout.names.is_dir()

    def ensure(self) -> None:
        try:
            for d in self.layout.dirs():
                d.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise os_error(exc, f"cannot create the model store in {self.layout.root}") from None

    @property
    def index(self) -> StoreIndex:
        if self._index is None:
            self.ensure()
            self._index = StoreIndex(self.layout.index_path)
        return self._index

    def _stamp(self) -> str:
        """Identity of every name, manifest and state file (replacing one changes its inode)."""
        h = hashlib.sha1()
        for d in (self.layout.names, self.layout.manifests, self.layout.state):
            with os.scandir(d) as entries:
                for e in sorted(entries, key=lambda e: e.name):
                    with contextlib.suppress(FileNotFoundError):
                        st = e.stat()
                        h.update(
                            f"{e.name}\0{st.st_ino}\0{st.st_mtime_ns}\0{st.st_size}\n".encode()
                        )
            h.update(b"/")
        return h.hexdigest()

    def sync(self, force: bool = False) -> None:
        """Rebuild the index from the files when they changed since the last rebuild."""
        stamp = self._stamp()
        if not force and self.index.stamp() == stamp:
            return
        snapshot = self._snapshot()
        try:
            self.index.rebuild(snapshot, stamp)
        except StoreError as exc:  # the file refused it: the files are the truth, index them
            self.index.use_memory(str(exc))
            self.index.rebuild(snapshot, stamp)

    def _snapshot(self) -> Snapshot:
        names: dict[str, str] = {}
        for f in self.layout.names.iterdir():
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                d = read_json(f)
                if f.name == quote(d["name"], safe="") and SHA256_RE.match(d["manifest"]):
                    names[d["name"]] = d["manifest"]
        manifests: dict[str, str] = {}
        for f in self.layout.manifests.glob("*.json"):
            with contextlib.suppress(OSError, UnicodeDecodeError):
                data = f.read_bytes()
                if hashlib.sha256(data).hexdigest() == f.stem:
                    manifests[f.stem] = data.decode()
        state: dict[str, tuple[bool, float | None]] = {}
        for f in self.layout.state.glob("*.json"):
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                d = read_json(f)
                state[f.stem] = (bool(d.get("pinned")), d.get("last_used"))
        return Snapshot(names, manifests, state)

    def reindex(self) -> dict[str, int]:
        """Throw the index away and rebuild it from the files (fingerprints are lost too)."""
        self.ensure()
        if self.layout.index_path.is_dir():
            raise StoreError(
                f"{self.layout.index_path} is a directory, not the store's index: "
                "remove it, then run llcuda models reindex"
            )
        try:
            for suffix in ("", "-wal", "-shm"):
                unlink_quietly(Path(f"{self.layout.index_path}{suffix}"))
        except StoreError as exc:  # a read-only store: the index it has stays as it is
            raise StoreError(f"cannot rebuild the index: {exc}") from None
        self._index = None
        self.sync(force=True)
        if self.index.notice:
            raise StoreError(f"cannot rebuild the index: {self.index.notice}")
        return {
            "names": len(self.index.names()),
            "manifests": len(self.index.manifests()),
            "blobs": sum(1 for _ in self.layout.blobs.iterdir()),
        }

    # -- reading --

    def names(self) -> dict[str, str]:
        """Every name in the store and the manifest digest it points at."""
        if not self.exists():
            return {}
        self.sync()
        return self.index.names()

    def manifest(self, digest: str) -> Manifest:
        self.sync()
        return self.load_manifest(digest)

    def load_manifest(self, digest: str) -> Manifest:
        """The manifest ``digest`` as the index has it (the caller synced it: ``names()``)."""
        raw = self.index.manifest_json(digest)
        if raw is None:
            raise StoreError(
                f"manifest {digest[:12]} is missing or corrupt; run llcuda models repair"
            )
        return Manifest.from_dict(json.loads(raw))

    def lookup(self, name: str) -> str | None:
        """The stored name ``name`` means: exact, any case, or ``owner/repo`` with one quant."""
        names = self.names()
        if name in names:
            return name
        lowered = [n for n in names if n.lower() == name.lower()]
        if len(lowered) == 1:
            return lowered[0]
        if ":" not in name:
            prefixed = [n for n in names if n.lower().startswith(name.lower() + ":")]
            if len(prefixed) == 1:
                return prefixed[0]
        return None

    def require(self, name: str) -> str:
        found = self.lookup(name)
        if found is None:
            raise ModelNotFoundError(f"no model named '{name}' in the store (see llcuda models ls)")
        return found

    def state(self, digest: str) -> ModelState:
        self.sync()
        pinned, last_used = self.index.state_of(digest)
        return ModelState(pinned, last_used)

    def entry(self, name: str) -> ModelEntry:
        stored = self.require(name)
        return self._entry(stored, self.names())

    def _entry(self, name: str, names: dict[str, str]) -> ModelEntry:
        """The entry of ``name`` from an index synced by the caller (``names()`` does)."""
        digest = names[name]
        manifest = self.load_manifest(digest)
        aliases = tuple(n for n, d in names.items() if d == digest and n != name)
        view = self.layout.view_dir(digest) / manifest.files[0].filename
        state = ModelState(*self.index.state_of(digest))
        return ModelEntry(name, digest, manifest, state, view, aliases)

    def entries(self) -> list[ModelEntry]:
        """One entry per name, sorted by name; entries with a broken manifest are skipped."""
        names = self.names()
        found = []
        for name in names:
            with contextlib.suppress(StoreError, KeyError, TypeError):
                found.append(self._entry(name, names))
        return found

    # -- loading --

    def resolve(self, name: str, record: bool = True) -> tuple[Path, str] | None:
        """(file to load, its sha256) for a stored name after a quick integrity check."""
        if not self.exists():
            return None
        stored = self.lookup(name)
        if stored is None:
            return None
        entry = self._entry(stored, self.names())
        for f in entry.manifest.files:
            self.check_blob(f, stored)
        view = entry.path
        if not view.exists():
            self.make_views(entry.digest, entry.manifest)
        from llcuda_tui.core.gguf import has_gguf_magic  # not at import: `models ls` needs none

        if not has_gguf_magic(view):
            raise CorruptModelError(f"model {stored}: {view} is not a GGUF file")
        if record:
            # LRU bookkeeping only: a full disk or a read-only store still loads the model
            with contextlib.suppress(OSError, StoreError):
                self.record_use(stored)
        return view, entry.sha256

    def check_blob(self, f: ManifestFile, name: str, on_progress: Progress | None = None) -> None:
        """Quick check (size, fingerprint, magic); a full re-hash when the fingerprint changed."""
        blob = self.layout.blob(f.sha256)
        try:
            seen = fingerprint(blob)
            size = blob.stat().st_size
        except FileNotFoundError:
            raise CorruptModelError(
                f"model {name} is damaged: {f.filename} is missing from the store "
                "(quarantined?); run llcuda models repair"
            ) from None
        from llcuda_tui.core.gguf import has_gguf_magic

        if size != f.size or not has_gguf_magic(blob):
            self.quarantine(f.sha256)
            raise CorruptModelError(self._damaged(name, f, "has the wrong size or no GGUF magic"))
        if self.index.fingerprint(f.sha256) == seen:
            return
        if storefs.sha256_file(blob, on_progress) != f.sha256:
            self.quarantine(f.sha256)
            raise CorruptModelError(self._damaged(name, f, "failed its sha256 check"))
        self.index.set_fingerprint(f.sha256, seen, time.time())

    @staticmethod
    def _damaged(name: str, f: ManifestFile, why: str) -> str:
        return (
            f"model {name} is damaged: {f.filename} {why}; the blob was quarantined, "
            "run llcuda models repair"
        )

    def quarantine(self, sha256: str) -> Path | None:
        """Move a bad blob out of ``blobs/`` (kept for inspection; gc removes it later)."""
        blob = self.layout.blob(sha256)
        target = self.layout.quarantine / f"{sha256}.{int(time.time())}"
        try:
            os.rename(blob, target)
        except FileNotFoundError:
            return None
        self.index.forget_blobs([sha256])
        return target

    def record_use(self, name: str) -> None:
        """Note that ``name`` was loaded now (for LRU eviction)."""
        digest = self.names()[self.require(name)]
        self._write_state(digest, last_used=time.time())

    def set_pinned(self, name: str, pinned: bool) -> ModelEntry:
        """Pin (never evicted) or unpin the model ``name`` points at; its entry after."""
        stored = self.require(name)
        self._write_state(self.names()[stored], pinned=pinned)
        return self.entry(stored)

    def _write_state(
        self, digest: str, pinned: bool | None = None, last_used: float | None = None
    ) -> None:
        with storefs.file_lock(self.layout.lock(f"state-{digest}")):
            current = self.state(digest)
            new = {
                "pinned": current.pinned if pinned is None else pinned,
                "last_used": current.last_used if last_used is None else last_used,
            }
            self.index.invalidate()
            atomic_write_json(self.layout.state_file(digest), new, self.layout.tmp)

    # -- in use --

    @contextlib.contextmanager
    def lease(self, name: str) -> Iterator[ModelEntry]:
        """Mark ``name`` as in use by this process while the block runs (never evicted)."""
        entry = self.entry(name)
        with self.hold({entry.digest}):
            yield entry

    @contextlib.contextmanager
    def hold(self, digests: set[str]) -> Iterator[None]:
        """Lease markers (``inuse/<digest>.<pid>-<hex>.lease``) on ``digests`` while the block
        runs: rm refuses, gc and the cap skip them; a dead holder's marker no longer counts."""
        markers = [self.layout.inuse / f"{d}.{unique_suffix()}.lease" for d in sorted(digests)]
        held = []
        try:
            for marker in markers:
                # a read-only store cannot be written by rm or gc either: load without a lease
                with contextlib.suppress(OSError):
                    marker.parent.mkdir(parents=True, exist_ok=True)
                    marker.touch()
                    held.append(marker)
            yield
        finally:
            for marker in held:
                unlink_quietly(marker)

    def digests_of_file(self, path: Path) -> set[str]:
        """The named models that use the blob ``path`` resolves to (a view, a blob); empty for
        a file outside the store."""
        if not self.exists():
            return set()
        try:
            real = path.resolve()
            inside = real.parent == self.layout.blobs.resolve()
        except OSError:
            return set()
        return set(self.live_blobs().get(real.name, set())) if inside else set()

    def users(self, digest: str) -> list[int]:
        """Live processes holding a lease on ``digest``."""
        pids = []
        for f in self.layout.inuse.glob(f"{digest}.*.lease"):
            pid = writer_pid(f)
            if pid is not None and pid_alive(pid):
                pids.append(pid)
        return pids

    # -- publishing --

    def publish(self, manifest: Manifest, names: Sequence[str]) -> str:
        """Write the manifest, its views and state, then point ``names`` at it (atomically)."""
        for name in names:
            check_name(name)
        for f in manifest.files:
            if not self.layout.blob(f.sha256).is_file():
                raise StoreError(f"cannot publish {names[0]}: blob of {f.filename} is missing")
        digest = manifest.digest
        self.index.invalidate()
        path = self.layout.manifest(digest)
        if not path.exists():
            atomic_write_json(path, manifest.to_dict(), self.layout.tmp, mode=0o444)
        self.make_views(digest, manifest)
        if not self.layout.state_file(digest).exists():
            initial = {"pinned": False, "last_used": None}
            atomic_write_json(self.layout.state_file(digest), initial, self.layout.tmp)
        for name in names:
            atomic_write_json(
                self.layout.name_file(name), {"name": name, "manifest": digest}, self.layout.tmp
            )
        self.sync()
        return digest

    def make_views(self, digest: str, manifest: Manifest) -> None:
        """(Re-)create ``views/<digest>/``: a symlink per file, with its original name."""
        view = self.layout.view_dir(digest)
        view.mkdir(parents=True, exist_ok=True)
        for f in manifest.files:
            link = view / f.filename
            target = self.layout.view_target(f.sha256)
            if link.is_symlink() and Path(os.readlink(link)) == target:
                continue
            tmp = self.layout.tmp / f"view-{unique_suffix()}.lnk"
            os.symlink(target, tmp)
            os.replace(tmp, link)
        fsync_dir(view)

    def build_manifest(self, source: Source, files: Sequence[ManifestFile]) -> Manifest:
        """The manifest of stored ``files`` (their GGUF summary read from the blobs), made now."""
        from llcuda_tui.core.gguf import read_summary

        summary = read_summary([self.layout.blob(f.sha256) for f in files])
        return Manifest(source, tuple(files), summary.to_dict(), iso_utc(time.time()) or "")

    def ingest_file(
        self,
        src: Path,
        on_progress: Progress | None = None,
        expect: str | None = None,
        link_only: bool = False,
    ) -> str:
        """Put a local file into ``blobs/`` (hardlink, or a copy across filesystems); its sha256."""
        self.ensure()
        tmp = self.layout.tmp / f"import-{unique_suffix()}.part"
        try:
            if link_only:
                os.link(src, tmp)
                linked, sha = True, None
            else:
                linked, sha = storefs.link_or_copy(src, tmp, on_progress)
            if linked:
                before = fingerprint(tmp)
                sha = storefs.sha256_file(tmp, on_progress)
                if fingerprint(tmp) != before:
                    raise StoreError(f"{src} changed while it was being imported; try again")
            assert sha is not None
            if expect is not None and sha != expect:
                raise IntegrityError(f"{src}: sha256 {sha[:12]} does not match {expect[:12]}")
            self.publish_blob(tmp, sha)
            return sha
        except OSError as exc:
            raise os_error(exc, f"cannot import {src}") from None
        finally:
            unlink_quietly(tmp)

    def publish_blob(self, tmp: Path, sha256: str, locked: bool = False) -> None:
        """Make verified ``tmp`` the blob ``sha256`` (read-only; an existing blob wins).

        ``locked``: the caller already holds the blob's lock.
        """
        with contextlib.nullcontext() if locked else storefs.file_lock(self.layout.lock(sha256)):
            blob = self.layout.blob(sha256)
            if blob.exists():
                self.keep_blob(sha256)
                return
            if os.stat(tmp).st_nlink == 1:
                # a copy is ours: read-only. A hardlink shares the user's inode: their file
                # keeps its mode (a chmod here outlived a killed import); the quick check
                # (size, fingerprint) catches an edit through it
                os.chmod(tmp, 0o444)
            try:
                os.link(tmp, blob)
            except FileExistsError:
                return
            fsync_dir(self.layout.blobs)
            self.index.set_fingerprint(sha256, fingerprint(blob), time.time())

    def keep_blob(self, sha256: str) -> None:
        """Refresh an existing blob's ctime so gc's grace period covers its new use."""
        with contextlib.suppress(FileNotFoundError):
            blob = self.layout.blob(sha256)
            os.chmod(blob, stat.S_IMODE(blob.stat().st_mode))  # same mode, new ctime

    # -- sizes --

    def blob_sizes(self) -> dict[str, int]:
        sizes = {}
        for f in self.layout.blobs.iterdir():
            with contextlib.suppress(FileNotFoundError):
                sizes[f.name] = f.stat().st_size
        return sizes

    def live_blobs(self) -> dict[str, set[str]]:
        """Blob sha256 -> the digests of named manifests that use it."""
        users: dict[str, set[str]] = {}
        for digest in set(self.names().values()):
            with contextlib.suppress(StoreError):
                for f in self.manifest(digest).files:
                    users.setdefault(f.sha256, set()).add(digest)
        return users

    # -- deleting --

    def drop_model(self, digest: str, report: Report) -> None:
        """Delete the names of ``digest``, its manifest, state and views, its unshared blobs."""
        manifest = None
        with contextlib.suppress(StoreError):
            manifest = self.manifest(digest)
        self.index.invalidate()
        for n, d in self.names().items():
            if d == digest:
                unlink_quietly(self.layout.name_file(n))
        self.sync()
        keep = self.live_blobs()
        for f in manifest.files if manifest else ():
            if f.sha256 not in keep:
                report.freed_bytes += self.delete_blob(f.sha256, report)
        self.delete_manifest(digest)
        report.actions.append(f"remove model {digest[:12]}")

    def delete_manifest(self, digest: str) -> None:
        """Delete a manifest with its views and state (its names and blobs are the caller's)."""
        import shutil

        self.index.invalidate()
        shutil.rmtree(self.layout.view_dir(digest), ignore_errors=True)
        unlink_quietly(self.layout.state_file(digest))
        unlink_quietly(self.layout.manifest(digest))
        self.sync()

    def delete_blob(self, sha256: str, report: Report) -> int:
        """Delete a blob unless a pull holds its lock; bytes freed."""
        lock = storefs.try_lock(self.layout.lock(sha256))
        if lock is None:
            report.actions.append(f"keep blob {sha256[:12]} (in use by a pull)")
            return 0
        try:
            blob = self.layout.blob(sha256)
            try:
                size = blob.stat().st_size
                blob.unlink()
            except FileNotFoundError:
                return 0
            self.index.forget_blobs([sha256])
            report.actions.append(f"delete blob {sha256[:12]} ({fmt_size(size, 2)})")
            return size
        finally:
            lock.release()
