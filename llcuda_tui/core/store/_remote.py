"""The team model store: an S3 bucket that mirrors the local store (see docs/store.md).

Layout under ``[store.remote] prefix`` in the bucket::

    blobs/sha256/<hex>          the GGUF bytes, immutable (metadata ``sha256``)
    manifests/<digest>.json     the local manifest's exact bytes (digest: their sha256)
    names/<quoted name>.json    {"name", "manifest", "size", "quant", "sha256", "pushed"}

A push writes the blobs, then the manifest, then the name, so a half-pushed model has no name
and is never listed; a name is one PUT, which readers see whole or not at all. A pull goes the
other way: every blob is hashed while it streams into the local store's partial file and
published only when its sha256 matches (the same partial files and per-blob locks as Hub
pulls, so two ranks on one node download a blob once).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import hashlib
import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

from llcuda_tui.core.config import Paths, Settings
from llcuda_tui.core.errors import ConfigError, ModelNotFoundError, UserInputError
from llcuda_tui.core.fmt import fmt_size
from llcuda_tui.core.store import _fs as storefs
from llcuda_tui.core.store import _pull as storepull
from llcuda_tui.core.store import _remote_maint
from llcuda_tui.core.store._base import StoreBase
from llcuda_tui.core.store._errors import IntegrityError
from llcuda_tui.core.store._hub import RemoteFile, check_remote_path
from llcuda_tui.core.store._layout import SHA256_RE, check_name
from llcuda_tui.core.store._manifest import Manifest, ManifestFile, iso_utc
from llcuda_tui.core.store._records import PullResult, Report
from llcuda_tui.core.store._remote_client import (
    RemoteConfig,
    RemoteError,
    RemoteNotFoundError,
    RemoteUnavailableError,
    is_missing,
    make_client,
    s3_calls,
)
from llcuda_tui.core.store._remote_fetch import fetch_blob
from llcuda_tui.core.store._remote_maint import GRACE_S
from llcuda_tui.core.store._remote_records import (
    BucketLayout,
    PushResult,
    RemoteEntry,
    entry_from,
    match_name,
)
from llcuda_tui.core.store._remote_transfer import (
    CONCURRENCY,
    PART_SIZE,
    Status,
    Target,
    UploadOutcome,
    UploadVanished,
    upload,
)
from llcuda_tui.core.store._space import check_space
from llcuda_tui.core.store._store import Store

_LIST_WORKERS = 8
_log = logging.getLogger(__name__)


def _quiet(_: str) -> None:
    return None


class RemoteStore:
    """The team store of one ``[store.remote]`` config; its methods are safe to run from
    several processes and machines at once (see docs/store.md for what each does on a fault)."""

    def __init__(
        self,
        config: RemoteConfig,
        *,
        part_size: int = PART_SIZE,
        concurrency: int = CONCURRENCY,
        client: Any = None,
    ) -> None:
        if not config.configured:
            raise ConfigError(
                "no team store: set [store.remote] bucket in config.toml (or LLCUDA_REMOTE_BUCKET)"
            )
        self.config = config
        self.layout = BucketLayout(config.key_prefix)
        self.part_size = part_size
        self.concurrency = concurrency
        self._client = client
        self._client_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> RemoteStore:
        return cls(RemoteConfig.from_settings(settings), **kwargs)

    @property
    def where(self) -> str:
        return self.config.where

    @property
    def client(self) -> Any:
        with self._client_lock:
            if self._client is None:
                self._client = make_client(self.config, self.concurrency + _LIST_WORKERS)
            return self._client

    def calls(self, what: str) -> contextlib.AbstractContextManager[None]:
        return s3_calls(self.config, what)

    def target(self, key: str) -> Target:
        return Target(self.client, self.config.bucket, key)

    # -- objects --

    def get(self, key: str, what: str) -> bytes | None:
        """The object's bytes, None when there is no such key."""
        from botocore.exceptions import ClientError

        with self.calls(what):
            try:
                r = self.client.get_object(Bucket=self.config.bucket, Key=key)
            except ClientError as exc:
                if is_missing(exc):
                    return None
                raise
            return bytes(r["Body"].read())

    def head(self, key: str, what: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        with self.calls(what):
            try:
                return dict(self.client.head_object(Bucket=self.config.bucket, Key=key))
            except ClientError as exc:
                if is_missing(exc):
                    return None
                raise

    def put(self, key: str, body: bytes, what: str) -> None:
        with self.calls(what):
            self.client.put_object(
                Bucket=self.config.bucket, Key=key, Body=body, ContentType="application/json"
            )

    def delete(self, key: str, what: str) -> None:
        with self.calls(what):
            self.client.delete_object(Bucket=self.config.bucket, Key=key)

    def list_objects(self, prefix: str) -> Iterator[dict[str, Any]]:
        """Every object under ``prefix`` (Key, Size, LastModified)."""
        with self.calls("listing the bucket"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.config.bucket, Prefix=prefix
            )
            for page in pages:
                yield from page.get("Contents", [])

    # -- reading --

    def names(self) -> list[str]:
        """Every model name in the team store, sorted."""
        found = (self.layout.name_of(o["Key"]) for o in self.list_objects(self.layout.names))
        return sorted(n for n in found if n)

    def _record(self, name: str) -> RemoteEntry | None:
        raw = self.get(self.layout.name(name), f"looking up {name}")
        if raw is None:
            return None
        try:
            return entry_from(json.loads(raw), name)
        except ValueError:
            return None

    def entries(self) -> list[RemoteEntry]:
        """One entry per name, sorted (names whose object is not valid are left out)."""
        names = self.names()
        with cf.ThreadPoolExecutor(_LIST_WORKERS, thread_name_prefix="s3-ls") as pool:
            found = list(pool.map(self._record, names))
        return [e for e in found if e is not None]

    def lookup(self, name: str) -> RemoteEntry | None:
        """The entry ``name`` means (exact, any case, ``owner/repo`` with one quant), or None."""
        with contextlib.suppress(UserInputError):
            found = self._record(check_name(name))
            if found is not None:
                return found
        match = match_name(name, self.names())
        return self._record(match) if match else None

    def require(self, name: str) -> RemoteEntry:
        found = self.lookup(name)
        if found is None:
            raise RemoteNotFoundError(
                f"no model named '{name}' in the team store {self.where} "
                "(see llcuda models remote ls)"
            )
        return found

    def manifest(self, digest: str, model: str = "") -> Manifest:
        """The manifest ``digest``, checked: its bytes hash to ``digest``, its files are safe."""
        label = model or digest[:12]
        raw = self.get(self.layout.manifest(digest), f"reading the manifest of {label}")
        if raw is None:
            raise RemoteError(f"team store {self.where}: the manifest of {label} is missing")
        got = hashlib.sha256(raw).hexdigest()
        if got != digest:
            raise IntegrityError(
                f"team store {self.where}: the manifest of {label} is corrupt "
                f"(expected sha256 {digest}, got {got}); nothing was stored"
            )
        try:
            manifest = Manifest.from_dict(json.loads(raw))
        except (ValueError, KeyError, TypeError) as exc:
            raise RemoteError(f"team store {self.where}: the manifest of {label}: {exc}") from None
        for f in manifest.files:
            check_remote_path(f.path)
            if not SHA256_RE.match(f.sha256) or f.size < 0:
                raise RemoteError(f"team store {self.where}: the manifest of {label} is invalid")
        return manifest

    def show(self, name: str) -> RemoteEntry:
        """The entry of ``name`` with its manifest."""
        entry = self.require(name)
        return replace(entry, manifest=self.manifest(entry.digest, entry.name))

    def has_blob(self, f: ManifestFile) -> bool:
        """True when the bucket has blob ``f`` with its size and sha256 (as metadata)."""
        head = self.head(self.layout.blob(f.sha256), f"looking up {f.filename}")
        if head is None:
            return False
        meta = {k.lower(): v for k, v in (head.get("Metadata") or {}).items()}
        return int(head.get("ContentLength", -1)) == f.size and meta.get("sha256") == f.sha256

    # -- push --

    def push(
        self,
        store: StoreBase,
        name: str,
        *,
        force: bool = False,
        on_progress: storefs.Progress | None = None,
        on_status: Status = _quiet,
    ) -> PushResult:
        """Upload the local model ``name``: blobs (skipped when the bucket has them with the same
        size and sha256, unless ``force``), then its manifest, then its name."""
        stored = store.require(name)
        entry = store.entry(stored)
        for f in entry.manifest.files:
            store.check_blob(f, stored)  # never spread a damaged copy
        try:
            encoded = store.layout.manifest(entry.digest).read_bytes()
        except OSError as exc:
            raise storefs.os_error(exc, f"cannot read the manifest of {stored}") from None
        if hashlib.sha256(encoded).hexdigest() != entry.digest:
            raise IntegrityError(f"the manifest of {stored} is corrupt; run llcuda models repair")
        m = entry.manifest
        pushed = RemoteEntry(
            stored, entry.digest, m.size, m.quant, entry.sha256, iso_utc(time.time()) or ""
        )
        current = self._record(stored)
        files = list({f.sha256: f for f in m.files}.values())
        same = not force and current is not None and current.digest == entry.digest
        if same and current is not None and all(self.has_blob(f) for f in files):
            return PushResult(current, skipped_files=len(files), up_to_date=True)
        sent = resumed = skipped = 0
        for f in files:
            if not force and self.has_blob(f):
                skipped += 1
                on_status(f"{f.filename} is already in the team store")
                continue
            on_status(f"uploading {f.filename} ({fmt_size(f.size, 2)})")
            outcome = self._upload_blob(store, f, on_progress, on_status)
            sent, resumed = sent + outcome.sent_bytes, resumed + outcome.resumed_bytes
        key = self.layout.manifest(entry.digest)
        if self.head(key, f"looking up the manifest of {stored}") is None:
            self.put(key, encoded, f"writing the manifest of {stored}")
        for f in files:  # a remote rm or gc may have taken a blob we skipped: name none missing
            if not self.has_blob(f):
                outcome = self._upload_blob(store, f, on_progress, on_status)
                sent += outcome.sent_bytes
        record = json.dumps(pushed.record(), sort_keys=True).encode()
        self.put(self.layout.name(stored), record, f"writing the name {stored}")
        return PushResult(pushed, sent, resumed, skipped)

    def _upload_blob(
        self,
        store: StoreBase,
        f: ManifestFile,
        on_progress: storefs.Progress | None,
        on_status: Status,
    ) -> UploadOutcome:
        path = store.layout.blob(f.sha256)
        for _ in range(2):
            try:
                with self.calls(f"uploading {f.filename}"):
                    outcome = upload(
                        self.target(self.layout.blob(f.sha256)), path, f.size,
                        {"sha256": f.sha256}, part_size=self.part_size,
                        concurrency=self.concurrency, on_progress=on_progress,
                        on_status=on_status,
                    )  # fmt: skip
            except UploadVanished:
                if self.has_blob(f):  # another push of the same blob finished it
                    return UploadOutcome(0, 0)
                on_status(f"the upload of {f.filename} was aborted elsewhere: starting again")
                continue
            except OSError as exc:
                raise storefs.os_error(exc, f"cannot read {path}") from None
            if not self.has_blob(f):
                raise RemoteError(
                    f"team store {self.where}: {f.filename} is not complete after its upload"
                )
            return outcome
        raise RemoteError(
            f"team store {self.where}: the upload of {f.filename} was aborted twice "
            "(is llcuda models remote gc running with a short --grace?)"
        )

    # -- pull --

    def pull(
        self,
        store: Store,
        name: str,
        *,
        on_progress: storefs.Progress | None = None,
        on_status: Status = _quiet,
        cancel: threading.Event | None = None,
    ) -> PullResult:
        """Download the model ``name`` into the local store under the same name (the same
        manifest, so the same digest); each blob is verified before it is published."""
        entry = self.require(name)
        check_name(entry.name)
        manifest = self.manifest(entry.digest, entry.name)
        store.ensure()
        existing = store.lookup(entry.name)
        old_digest = store.names()[existing] if existing else None
        blobs = store.layout
        if old_digest == entry.digest and all(
            blobs.blob(f.sha256).exists() for f in manifest.files
        ):
            files_here = len(manifest.files)
            return PullResult(store.entry(entry.name), reused_files=files_here, up_to_date=True)
        downloaded = reused = 0
        with ExitStack() as held:
            for f in sorted({f.sha256: f for f in manifest.files}.values(), key=_sha):
                held.enter_context(storepull._blob_lock(store, f.sha256, f.filename, on_status))
            missing = [f for f in manifest.files if not blobs.blob(f.sha256).exists()]
            pending = sum(f.size - self._partial_bytes(store, f) for f in missing)
            check_space(store, pending, protect=existing)
            for f in manifest.files:
                if blobs.blob(f.sha256).exists():
                    store.keep_blob(f.sha256)
                    reused += 1
                    continue
                on_status(f"downloading {f.filename} ({fmt_size(f.size, 2)}) from the team store")
                downloaded += fetch_blob(self, store, f, entry.name, on_progress, on_status, cancel)
            store.publish(manifest, [entry.name])
        storepull._drop_replaced(store, old_digest, entry.digest)
        evicted = store.enforce_cap(protect={entry.digest})
        return PullResult(store.entry(entry.name), downloaded, reused, False, tuple(evicted))

    @staticmethod
    def _partial_bytes(store: StoreBase, f: ManifestFile) -> int:
        return storepull.partial_bytes(store, "", "", RemoteFile(f.path, f.size, f.sha256))

    # -- upkeep (_remote_maint.py) --

    def remove(self, name: str, dry_run: bool = False) -> Report:
        """Remove a name; when no other name uses its model, the manifest and the blobs no
        other model uses go too."""
        return _remote_maint.remove(self, name, dry_run)

    def gc(self, grace_s: float = GRACE_S, dry_run: bool = False) -> Report:
        """Delete what no name uses and is older than ``grace_s`` (manifests, blobs), and abort
        multipart uploads idle for ``grace_s`` (what a killed push leaves)."""
        return _remote_maint.gc(self, grace_s, dry_run)


def _sha(f: ManifestFile) -> str:
    return f.sha256


# --- for the engine's name resolution ---------------------------------------------------------


def pull_missing(spec: str, paths: Paths) -> tuple[Path, str] | None:
    """(file to load, sha256) of ``spec`` pulled from the team store when it is configured and
    has that name (``llcuda serve -m NAME``, every rank of ``batch --mpi``: ranks on one node
    share the download through the store's per-blob lock); None when it is not there."""
    settings = Settings.load(paths)
    config = RemoteConfig.from_settings(settings)
    if not config.configured:
        return None
    try:
        check_name(spec)
    except UserInputError:
        return None
    remote = RemoteStore(config)
    try:
        entry = remote.lookup(spec)
    except RemoteUnavailableError as exc:
        raise ModelNotFoundError(
            f"no model named '{spec}' here (not a file, not in the store), and {exc}"
        ) from None
    if entry is None:
        return None
    store = Store.from_settings(settings)
    store.ensure()
    # the ranks of one node pull one at a time: the first downloads, the others find the model
    # (the per-blob locks alone would do for the bytes, but processes that open a brand-new
    # store's index.sqlite at the same moment can fail with "database is locked")
    with storefs.file_lock(store.layout.lock("team-store-pull")):
        _log.info("pulling %s from the team store %s", entry.name, remote.where)
        result = remote.pull(store, entry.name, on_status=_log.info)
        _log.info(
            "pulled %s from the team store: %d bytes downloaded, %d files already here",
            entry.name, result.downloaded_bytes, result.reused_files,
        )  # fmt: skip
        return store.resolve(entry.name, record=True)
