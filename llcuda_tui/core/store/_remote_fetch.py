"""Pulling one blob from the team store into the local store: the same partial file, state
file and takeover rules as a Hub download (``_pull.py``), the bytes fetched by
:func:`~llcuda_tui.core.store._remote_transfer.download` and hashed as they are written; the
blob is published only when its sha256 matches the manifest's.
"""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING

from llcuda_tui.core.fmt import fmt_size
from llcuda_tui.core.store import _fs as storefs
from llcuda_tui.core.store import _pull as storepull
from llcuda_tui.core.store._base import StoreBase
from llcuda_tui.core.store._errors import IntegrityError, StoreFullError
from llcuda_tui.core.store._hub import RemoteFile
from llcuda_tui.core.store._manifest import ManifestFile
from llcuda_tui.core.store._remote_client import RemoteError
from llcuda_tui.core.store._remote_transfer import Status, Target, download

if TYPE_CHECKING:
    from llcuda_tui.core.store._remote import RemoteStore


def fetch_blob(
    remote: RemoteStore,
    store: StoreBase,
    f: ManifestFile,
    model: str,
    on_progress: storefs.Progress | None,
    on_status: Status,
    cancel: threading.Event | None,
) -> int:
    """Download blob ``f`` into ``blobs/`` (the caller holds its lock); bytes downloaded."""
    target = remote.target(remote.layout.blob(f.sha256))
    head = remote.head(target.key, f"looking up {f.filename}")
    if head is None:
        raise RemoteError(
            f"model {model}: {f.filename} (sha256 {f.sha256[:12]}) is missing from the team "
            f"store {remote.where}; nothing was stored"
        )
    if int(head.get("ContentLength", -1)) != f.size:
        raise IntegrityError(
            f"model {model}: {f.filename} in the team store has {head.get('ContentLength')} "
            f"bytes, its manifest says {f.size} (sha256 {f.sha256}); nothing was stored"
        )
    part = storepull._claim_partial(store, f.sha256)
    state = part.with_suffix(".json")
    record = {"remote": remote.where, "key": target.key, "path": f.path, "size": f.size,
              "sha256": f.sha256, "started": time.time()}  # fmt: skip
    partial: storepull._Partial | None = None
    try:
        storefs.atomic_write_json(state, record, store.layout.tmp)
        partial = storepull._Partial(part, RemoteFile(f.path, f.size, f.sha256))
        downloaded = _download(remote, partial, target, f, model, on_progress, on_status, cancel)
        partial.close()
        store.publish_blob(part, f.sha256, locked=True)
    except OSError as exc:
        if storefs.is_disk_full(exc):
            raise StoreFullError(
                f"disk full while pulling {f.filename} from the team store; the partial "
                f"file is kept in {store.layout.tmp} and the next pull resumes it"
            ) from None
        raise storefs.os_error(exc, f"cannot write the download of {f.filename}") from None
    except IntegrityError:
        storefs.unlink_quietly(part)
        storefs.unlink_quietly(state)
        raise
    finally:
        if partial is not None:
            partial.close()
        with storepull._ACTIVE_LOCK:
            storepull._ACTIVE.discard(part)
    storefs.unlink_quietly(part)
    storefs.unlink_quietly(state)
    return downloaded


def _download(
    remote: RemoteStore,
    partial: storepull._Partial,
    target: Target,
    f: ManifestFile,
    model: str,
    on_progress: storefs.Progress | None,
    on_status: Status,
    cancel: threading.Event | None,
) -> int:
    restarted, downloaded = False, 0
    while True:
        offset = partial.rehash(None)
        if offset:
            on_status(f"resuming {f.filename} at {fmt_size(offset, 2)}")
        with remote.calls(f"downloading {f.filename} (pull again to resume)"):
            downloaded += download(
                target, partial, offset, f.size, part_size=remote.part_size,
                concurrency=remote.concurrency, on_progress=on_progress, cancel=cancel,
                label=f.filename,
            )  # fmt: skip
        os.fsync(partial.fd)
        if partial.matches():
            return downloaded
        if offset and not restarted:
            restarted = True
            on_status(f"{f.filename} does not match after resuming: downloading it again")
            partial.truncate()
            continue
        got = partial.hashes.sha256.hexdigest()
        raise IntegrityError(
            f"model {model}: {f.filename} from the team store is corrupt: expected sha256 "
            f"{f.sha256}, got {got}; nothing was stored"
        )
