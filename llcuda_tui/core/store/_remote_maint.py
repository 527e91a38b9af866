"""Upkeep of the team store: ``remote rm`` (a name, and its model when no other name uses it)
and ``remote gc`` (mark and sweep: names -> manifests -> blobs, plus the multipart uploads that
killed pushes left open)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from llcuda_tui.core.fmt import fmt_size
from llcuda_tui.core.store._layout import SHA256_RE
from llcuda_tui.core.store._records import Report
from llcuda_tui.core.store._remote_client import RemoteError, error_code
from llcuda_tui.core.store._remote_transfer import upload_activity

if TYPE_CHECKING:
    from llcuda_tui.core.store._remote import RemoteStore

GRACE_S = 3600.0
"""``remote gc`` keeps unreferenced objects, and open uploads idle for less than this."""


def remove(remote: RemoteStore, name: str, dry_run: bool = False) -> Report:
    """Remove a name; when no other name uses its model, the manifest and the blobs no
    other model uses go too."""
    entry = remote.require(name)
    report = Report(actions=[f"remove name {entry.name}"])
    if not dry_run:
        remote.delete(remote.layout.name(entry.name), f"removing {entry.name}")
    others = [e for e in remote.entries() if e.name != entry.name]
    sharing = [e.name for e in others if e.digest == entry.digest]
    if sharing:
        report.actions.append(f"model stays under {', '.join(sharing)}")
        return report
    keep = live_blobs(remote, {e.digest for e in others}, report)
    try:
        manifest = remote.manifest(entry.digest, entry.name)
    except RemoteError as exc:
        report.problems.append(str(exc))
        manifest = None
    for f in {f.sha256: f for f in manifest.files}.values() if manifest else ():
        if f.sha256 in keep:
            continue
        report.actions.append(f"delete blob {f.sha256[:12]} ({fmt_size(f.size, 2)})")
        report.freed_bytes += f.size
        if not dry_run:
            remote.delete(remote.layout.blob(f.sha256), f"deleting {f.filename}")
    report.actions.append(f"remove model {entry.digest[:12]}")
    if not dry_run:
        remote.delete(remote.layout.manifest(entry.digest), f"deleting the manifest of {name}")
    return report


def live_blobs(remote: RemoteStore, digests: set[str], report: Report) -> set[str]:
    """The blobs the manifests ``digests`` use (unreadable manifests are problems)."""
    live: set[str] = set()
    for digest in sorted(digests):
        try:
            live |= {f.sha256 for f in remote.manifest(digest).files}
        except RemoteError as exc:
            report.problems.append(str(exc))
    return live


def gc(remote: RemoteStore, grace_s: float = GRACE_S, dry_run: bool = False) -> Report:
    """Delete what no name uses and is older than ``grace_s`` (manifests, blobs), and abort
    multipart uploads idle for ``grace_s`` (what a killed push leaves)."""
    report = Report()
    now = time.time()
    digests = {e.digest for e in remote.entries()}
    live = live_blobs(remote, digests, report)
    manifests = list(remote.list_objects(remote.layout.manifests))
    blobs = list(remote.list_objects(remote.layout.blobs))
    # a push may have named a model since the first listing: count its blobs as live too
    later = {e.digest for e in remote.entries()} - digests
    digests |= later
    live |= live_blobs(remote, later, report)
    for obj in manifests:
        digest = obj["Key"][len(remote.layout.manifests) :].removesuffix(".json")
        if SHA256_RE.match(digest) and digest not in digests and _age(obj, now) >= grace_s:
            report.actions.append(f"delete manifest {digest[:12]}")
            if not dry_run:
                remote.delete(obj["Key"], f"deleting manifest {digest[:12]}")
    for obj in blobs:
        sha = obj["Key"][len(remote.layout.blobs) :]
        if SHA256_RE.match(sha) and sha not in live and _age(obj, now) >= grace_s:
            size = int(obj.get("Size", 0))
            report.actions.append(f"delete blob {sha[:12]} ({fmt_size(size, 2)})")
            report.freed_bytes += size
            if not dry_run:
                remote.delete(obj["Key"], f"deleting blob {sha[:12]}")
    for key, upload_id, idle in open_uploads(remote, now):
        if idle < grace_s:
            report.actions.append(f"keep the upload of {key} (active {idle:.0f} s ago)")
            continue
        report.actions.append(f"abort the upload of {key} (idle {idle:.0f} s)")
        if not dry_run:
            with remote.calls(f"aborting the upload of {key}"):
                remote.client.abort_multipart_upload(
                    Bucket=remote.config.bucket, Key=key, UploadId=upload_id
                )
    return report


def open_uploads(remote: RemoteStore, now: float) -> list[tuple[str, str, float]]:
    """(key, upload id, seconds since it last changed) of every open multipart upload."""
    from botocore.exceptions import ClientError

    found = []
    with remote.calls("listing open uploads"):
        pages = remote.client.get_paginator("list_multipart_uploads").paginate(
            Bucket=remote.config.bucket, Prefix=remote.config.key_prefix
        )
        for page in pages:
            for u in page.get("Uploads", []):
                key, upload_id = str(u["Key"]), str(u["UploadId"])
                try:
                    stamps = upload_activity(remote.client, remote.config.bucket, key, upload_id)
                except ClientError as exc:
                    if error_code(exc) == "NoSuchUpload":  # completed or aborted meanwhile
                        continue
                    raise
                last = max([u["Initiated"], *stamps]).timestamp()
                found.append((key, upload_id, now - last))
    return found


def _age(obj: dict[str, Any], now: float) -> float:
    return now - float(obj["LastModified"].timestamp())
