"""The model store: sha256-addressed blobs, immutable manifests, names, views, an index.

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

For other parts of the program: :func:`resolve_name` (what the engine loads; it checks the
files and records the use), :func:`record_use`, :func:`list_models`, :func:`lease`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from llcuda_tui.core.config import Paths, Settings
from llcuda_tui.core.errors import ConfigError, ModelLoadError, ModelNotFoundError, UserInputError
from llcuda_tui.core.gguf import GgufSummary, has_gguf_magic, read_summary, split_info
from llcuda_tui.core.store import _fs as storefs
from llcuda_tui.core.store._fs import (
    IntegrityError,
    Progress,
    StoreError,
    StoreFullError,
    UnsafeNameError,
    atomic_write_json,
    canonical_json,
    fsync_dir,
    os_error,
    read_json,
    unique_suffix,
)
from llcuda_tui.core.store._index import Snapshot, StoreIndex

__all__ = [
    "IntegrityError",
    "ModelEntry",
    "Store",
    "StoreError",
    "StoreFullError",
    "UnsafeNameError",
    "lease",
    "list_models",
    "record_use",
    "resolve_name",
]

GRACE_S = 3600.0
"""Unreferenced blobs and manifests younger than this are kept by gc (a pull may be mid-way)."""
PARTIAL_MAX_AGE_S = 7 * 86400.0
STALE_PARTIAL_S = 30.0
"""A partial download whose writer is alive is taken over only after this long without writes."""
SPACE_MARGIN = 64 << 20
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-/:+@]*$")


class CorruptModelError(IntegrityError, ModelLoadError):
    """A stored model failed its integrity check; its bad blob was quarantined."""

    exit_code = 1


# --- layout and records ---------------------------------------------------------------------


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


@dataclass(frozen=True)
class ManifestFile:
    role: str
    """'model' (the file to load: a single GGUF or shard 1) or 'shard'."""
    path: str
    """Path in the source repo (or the original file name for imports)."""
    sha256: str
    size: int

    @property
    def filename(self) -> str:
        return self.path.rpartition("/")[2]


@dataclass(frozen=True)
class Manifest:
    """What a stored model is. Immutable: its file is named by the sha256 of its JSON."""

    source: dict[str, Any]
    files: tuple[ManifestFile, ...]
    gguf: dict[str, Any]
    created: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": 1,
            "source": self.source,
            "files": [vars(f) for f in self.files],
            "gguf": self.gguf,
            "created": self.created,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        files = tuple(ManifestFile(**f) for f in d["files"])
        return cls(dict(d["source"]), files, dict(d.get("gguf") or {}), str(d["created"]))

    def encoded(self) -> bytes:
        return canonical_json(self.to_dict())

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.encoded()).hexdigest()

    @property
    def quant(self) -> str:
        return str(self.gguf.get("quant") or "")

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def summary(self) -> GgufSummary | None:
        return GgufSummary.from_dict(self.gguf) if self.gguf.get("arch") else None

    def same_content(self, other: Manifest) -> bool:
        keys = ("kind", "repo", "commit")
        return self.files == other.files and all(
            self.source.get(k) == other.source.get(k) for k in keys
        )


@dataclass(frozen=True)
class ModelState:
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
            "last_used": _iso(self.state.last_used),
            "created": m.created,
            "path": str(self.path),
            "source": m.source,
            "files": [vars(f) for f in m.files],
            "gguf": m.gguf,
        }


@dataclass(frozen=True)
class PullResult:
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


# --- helpers ---------------------------------------------------------------------------------


def _now() -> float:
    return time.time()


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_iso(text: str) -> float:
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return 0.0


def check_name(name: str) -> str:
    """``name`` if it can name a model (``owner/repo:Q4_K_M``, ``my-model``), else an error."""
    bad = (
        not name
        or len(name) > 200
        or not _NAME_RE.match(name)
        or any(part in ("", ".", "..") for part in name.split("/"))
    )
    if bad:
        raise UnsafeNameError(
            f"'{name}' cannot name a model (letters, digits and ._-/:+@; no '..', no leading '/')"
        )
    return name


def parse_size(text: str) -> int | None:
    """Bytes in ``text`` ('50GB', '1.5 TiB', '800M', '1234'); None for ''."""
    text = text.strip()
    if not text:
        return None
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]?)(I?B?)", text.upper())
    if m is None:
        raise ConfigError(f"store.max_size: '{text}' is not a size (e.g. 50GB, 200GiB)")
    number, prefix, suffix = float(m.group(1)), m.group(2), m.group(3)
    base = 1000 if suffix == "B" and prefix else 1024
    return int(number * base ** " KMGT".index(prefix or " "))


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"


def _fingerprint(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}:{st.st_dev}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pid_of(path: Path) -> int | None:
    """The writer's pid from a temp name made with ``unique_suffix`` (``key.PID-hex.part``)."""
    m = re.search(r"\.(\d+)-[0-9a-f]+\.[a-z]+$", path.name) or re.search(
        r"-(\d+)-[0-9a-f]+\.[a-z]+$", path.name
    )
    return int(m.group(1)) if m else None


def _silent_unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


# --- the store -------------------------------------------------------------------------------


class Store:
    """The model store under ``paths.store_dir``; every method is safe across processes."""

    def __init__(self, paths: Paths, max_size: int | None = None) -> None:
        self.paths = paths
        self.layout = Layout(paths.store_dir)
        self.max_size = max_size
        self._index: StoreIndex | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Store:
        return cls(settings.paths, parse_size(settings.store.max_size))

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
        self.index.rebuild(self._snapshot(), stamp)

    def _snapshot(self) -> Snapshot:
        names: dict[str, str] = {}
        for f in self.layout.names.iterdir():
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                d = read_json(f)
                if f.name == quote(d["name"], safe="") and _SHA_RE.match(d["manifest"]):
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
        for suffix in ("", "-wal", "-shm"):
            _silent_unlink(Path(f"{self.layout.index_path}{suffix}"))
        self._index = None
        self.sync(force=True)
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
        return self._load_manifest(digest)

    def _load_manifest(self, digest: str) -> Manifest:
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
        manifest = self._load_manifest(digest)
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
            self._make_views(entry.digest, entry.manifest)
        if not has_gguf_magic(view):
            raise CorruptModelError(f"model {stored}: {view} is not a GGUF file")
        if record:
            self.record_use(stored)
        return view, entry.sha256

    def check_blob(self, f: ManifestFile, name: str, on_progress: Progress | None = None) -> None:
        """Quick check (size, fingerprint, magic); a full re-hash when the fingerprint changed."""
        blob = self.layout.blob(f.sha256)
        try:
            fingerprint = _fingerprint(blob)
            size = blob.stat().st_size
        except FileNotFoundError:
            raise CorruptModelError(
                f"model {name} is damaged: {f.filename} is missing from the store "
                "(quarantined?); run llcuda models repair"
            ) from None
        if size != f.size or not has_gguf_magic(blob):
            self.quarantine(f.sha256)
            raise CorruptModelError(self._damaged(name, f, "has the wrong size or no GGUF magic"))
        if self.index.fingerprint(f.sha256) == fingerprint:
            return
        if storefs.sha256_file(blob, on_progress) != f.sha256:
            self.quarantine(f.sha256)
            raise CorruptModelError(self._damaged(name, f, "failed its sha256 check"))
        self.index.set_fingerprint(f.sha256, fingerprint, _now())

    @staticmethod
    def _damaged(name: str, f: ManifestFile, why: str) -> str:
        return (
            f"model {name} is damaged: {f.filename} {why}; the blob was quarantined, "
            "run llcuda models repair"
        )

    def quarantine(self, sha256: str) -> Path | None:
        """Move a bad blob out of ``blobs/`` (kept for inspection; gc removes it later)."""
        blob = self.layout.blob(sha256)
        target = self.layout.quarantine / f"{sha256}.{int(_now())}"
        try:
            os.rename(blob, target)
        except FileNotFoundError:
            return None
        self.index.forget_blobs([sha256])
        return target

    def record_use(self, name: str) -> None:
        """Note that ``name`` was loaded now (for LRU eviction)."""
        digest = self.names()[self.require(name)]
        self._write_state(digest, last_used=_now())

    def set_pinned(self, name: str, pinned: bool) -> ModelEntry:
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
        marker = self.layout.inuse / f"{entry.digest}.{unique_suffix()}.lease"
        marker.touch()
        try:
            yield entry
        finally:
            _silent_unlink(marker)

    def users(self, digest: str) -> list[int]:
        """Live processes holding a lease on ``digest``."""
        pids = []
        for f in self.layout.inuse.glob(f"{digest}.*.lease"):
            pid = _pid_of(f)
            if pid is not None and _pid_alive(pid):
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
        self._make_views(digest, manifest)
        if not self.layout.state_file(digest).exists():
            initial = {"pinned": False, "last_used": None}
            atomic_write_json(self.layout.state_file(digest), initial, self.layout.tmp)
        for name in names:
            atomic_write_json(
                self.layout.name_file(name), {"name": name, "manifest": digest}, self.layout.tmp
            )
        self.sync()
        return digest

    def _make_views(self, digest: str, manifest: Manifest) -> None:
        view = self.layout.view_dir(digest)
        view.mkdir(parents=True, exist_ok=True)
        for f in manifest.files:
            link = view / f.filename
            target = Path("..") / ".." / "blobs" / f.sha256
            if link.is_symlink() and Path(os.readlink(link)) == target:
                continue
            tmp = self.layout.tmp / f"view-{unique_suffix()}.lnk"
            os.symlink(target, tmp)
            os.replace(tmp, link)
        fsync_dir(view)

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
                before = _fingerprint(tmp)
                sha = storefs.sha256_file(tmp, on_progress)
                if _fingerprint(tmp) != before:
                    raise StoreError(f"{src} changed while it was being imported; try again")
            assert sha is not None
            if expect is not None and sha != expect:
                raise IntegrityError(f"{src}: sha256 {sha[:12]} does not match {expect[:12]}")
            self.publish_blob(tmp, sha)
            return sha
        except OSError as exc:
            raise os_error(exc, f"cannot import {src}") from None
        finally:
            _silent_unlink(tmp)

    def publish_blob(self, tmp: Path, sha256: str, locked: bool = False) -> None:
        """Make verified ``tmp`` the blob ``sha256`` (read-only; an existing blob wins).

        ``locked``: the caller already holds the blob's lock.
        """
        with contextlib.nullcontext() if locked else storefs.file_lock(self.layout.lock(sha256)):
            blob = self.layout.blob(sha256)
            if blob.exists():
                self.keep_blob(sha256)
                return
            os.chmod(tmp, 0o444)
            try:
                os.link(tmp, blob)
            except FileExistsError:
                return
            fsync_dir(self.layout.blobs)
            self.index.set_fingerprint(sha256, _fingerprint(blob), _now())

    def keep_blob(self, sha256: str) -> None:
        """Refresh an existing blob's ctime so gc's grace period covers its new use."""
        with contextlib.suppress(FileNotFoundError):
            os.chmod(self.layout.blob(sha256), 0o444)

    def import_path(
        self,
        path: Path,
        name: str | None = None,
        source: dict[str, Any] | None = None,
        on_progress: Progress | None = None,
    ) -> ModelEntry:
        """Import a local GGUF (all shards when it is one shard of a split model)."""
        shards = local_shards(path)
        name = check_name(name or default_import_name(shards[0]))
        source = source or {"kind": "import", "path": str(shards[0].resolve())}
        existing = self.lookup(name)
        if existing is not None and self._same_files(existing, shards):
            return self.entry(existing)
        self._check_space(sum(p.stat().st_size for p in shards), protect=existing)
        files = []
        for i, shard in enumerate(shards):
            sha = self.ingest_file(shard, on_progress)
            files.append(
                ManifestFile("model" if i == 0 else "shard", shard.name, sha, shard.stat().st_size)
            )
        manifest = self._manifest(source, files)
        self.publish(manifest, [name])
        self.enforce_cap(protect={manifest.digest})
        return self.entry(name)

    def _same_files(self, name: str, shards: Sequence[Path]) -> bool:
        """True when ``name`` already holds exactly these files (checked by inode, else hash)."""
        entry = self.entry(name)
        if len(entry.manifest.files) != len(shards):
            return False
        for f, shard in zip(entry.manifest.files, shards, strict=True):
            blob = self.layout.blob(f.sha256)
            if not blob.exists() or shard.stat().st_size != f.size:
                return False
            if not os.path.samefile(blob, shard) and storefs.sha256_file(shard) != f.sha256:
                return False
        return True

    def _manifest(self, source: dict[str, Any], files: list[ManifestFile]) -> Manifest:
        blobs = [self.layout.blob(f.sha256) for f in files]
        summary = read_summary(blobs)
        created = _iso(_now()) or ""
        return Manifest(source, tuple(files), summary.to_dict(), created)

    # -- space --

    def blob_sizes(self) -> dict[str, int]:
        sizes = {}
        for f in self.layout.blobs.iterdir():
            with contextlib.suppress(FileNotFoundError):
                sizes[f.name] = f.stat().st_size
        return sizes

    def _live_blobs(self) -> dict[str, set[str]]:
        """Blob sha256 -> the digests of named manifests that use it."""
        users: dict[str, set[str]] = {}
        for digest in set(self.names().values()):
            with contextlib.suppress(StoreError):
                for f in self.manifest(digest).files:
                    users.setdefault(f.sha256, set()).add(digest)
        return users

    def _check_space(self, incoming: int, protect: str | None = None) -> None:
        """Refuse early when ``incoming`` bytes cannot fit on the disk or under the cap."""
        self.ensure()
        free = shutil.disk_usage(self.layout.tmp).free
        if incoming + SPACE_MARGIN > free:
            raise StoreFullError(
                f"not enough disk space: need {fmt_bytes(incoming)}, "
                f"{fmt_bytes(free)} free in {self.layout.root}"
            )
        if self.max_size is None:
            return
        protected = {self.names()[protect]} if protect else set()
        over = self._live_size() + incoming - self.max_size
        if over > 0 and self._eviction_plan(over, protected)[1] < over:
            raise StoreFullError(
                f"store.max_size {fmt_bytes(self.max_size)} cannot fit {fmt_bytes(incoming)} "
                "more: the rest is pinned or in use (unpin or rm something, or raise the cap)"
            )

    def _live_size(self) -> int:
        sizes = self.blob_sizes()
        return sum(sizes.get(sha, 0) for sha in self._live_blobs())

    def _eviction_plan(self, need: int, protect: set[str]) -> tuple[list[str], int]:
        """Least recently used unpinned, unused manifests whose removal frees ``need`` bytes."""
        users = self._live_blobs()
        sizes = self.blob_sizes()
        order = []
        for digest in set(self.names().values()) - protect:
            state = self.state(digest)
            if state.pinned or self.users(digest):
                continue
            with contextlib.suppress(StoreError):
                last = state.last_used or _parse_iso(self.manifest(digest).created)
                order.append((last, digest))
        plan: list[str] = []
        freed = 0
        for _, digest in sorted(order):
            if freed >= need:
                break
            plan.append(digest)
            for sha in list(users):
                users[sha].discard(digest)
                if not users[sha]:
                    freed += sizes.get(sha, 0)
                    del users[sha]
        return plan, freed

    def enforce_cap(self, protect: set[str] | None = None, dry_run: bool = False) -> list[str]:
        """Evict least recently used models until the store is under ``max_size``; their names."""
        if self.max_size is None:
            return []
        over = self._live_size() - self.max_size
        if over <= 0:
            return []
        plan, _ = self._eviction_plan(over, protect or set())
        evicted = []
        names = self.names()
        for digest in plan:
            evicted += [n for n, d in names.items() if d == digest]
            if not dry_run:
                self._drop_model(digest, Report())
        return evicted

    # -- removing --

    def remove(self, name: str, dry_run: bool = False, force: bool = False) -> Report:
        """Remove a name; when it was the model's last name, the model and its blobs go too."""
        stored = self.require(name)
        names = self.names()
        digest = names[stored]
        state, users = self.state(digest), self.users(digest)
        if state.pinned and not force:
            raise UserInputError(f"{stored} is pinned: unpin it first (or use --force)")
        if users and not force:
            raise UserInputError(f"{stored} is in use by process {users[0]} (or use --force)")
        report = Report(actions=[f"remove name {stored}"])
        others = [n for n, d in names.items() if d == digest and n != stored]
        if dry_run:
            if not others:
                report.freed_bytes = self._exclusive_bytes(digest)
            return report
        self.index.invalidate()
        _silent_unlink(self.layout.name_file(stored))
        if others:
            report.actions.append(f"model stays under {', '.join(others)}")
        else:
            self._drop_model(digest, report)
        self.sync()
        return report

    def _exclusive_bytes(self, digest: str) -> int:
        sizes = self.blob_sizes()
        return sum(sizes.get(s, 0) for s, users in self._live_blobs().items() if users == {digest})

    def _drop_model(self, digest: str, report: Report) -> None:
        """Delete the names of ``digest``, its manifest, state and views, its unshared blobs."""
        manifest = None
        with contextlib.suppress(StoreError):
            manifest = self.manifest(digest)
        self.index.invalidate()
        for n, d in self.names().items():
            if d == digest:
                _silent_unlink(self.layout.name_file(n))
        self.sync()
        keep = self._live_blobs()
        for f in manifest.files if manifest else ():
            if f.sha256 not in keep:
                report.freed_bytes += self._delete_blob(f.sha256, report)
        self._delete_manifest(digest)
        report.actions.append(f"remove model {digest[:12]}")

    def _delete_manifest(self, digest: str) -> None:
        self.index.invalidate()
        shutil.rmtree(self.layout.view_dir(digest), ignore_errors=True)
        _silent_unlink(self.layout.state_file(digest))
        _silent_unlink(self.layout.manifest(digest))
        self.sync()

    def _delete_blob(self, sha256: str, report: Report) -> int:
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
            report.actions.append(f"delete blob {sha256[:12]} ({fmt_bytes(size)})")
            return size
        finally:
            lock.release()

    # -- the rest of the store's verbs (storepull.py, storemaint.py) --

    def pull(self, repo: str, **kwargs: Any) -> PullResult:
        """Download a model from the Hub; see :func:`storepull.pull`."""
        from llcuda_tui.core.store import _pull as storepull

        return storepull.pull(self, repo, **kwargs)

    def verify(self, name: str | None = None, **kwargs: Any) -> Report:
        from llcuda_tui.core.store import _maint as storemaint

        return storemaint.verify(self, name, **kwargs)

    def repair(self, **kwargs: Any) -> Report:
        from llcuda_tui.core.store import _maint as storemaint

        return storemaint.repair(self, **kwargs)

    def gc(self, **kwargs: Any) -> Report:
        from llcuda_tui.core.store import _maint as storemaint

        return storemaint.gc(self, **kwargs)

    def du(self) -> dict[str, Any]:
        from llcuda_tui.core.store import _maint as storemaint

        return storemaint.du(self)


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
    info = split_info(path.name)
    stem = info[0] if info else path.name.removesuffix(".gguf")
    cleaned = re.sub(r"[^A-Za-z0-9._\-+@]", "-", stem).lstrip("._-") or "model"
    return cleaned


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
