"""Moving one blob between the local store and the bucket: a resumable multipart upload and a
parallel ranged download that is hashed, in order, while it is written.

Both keep ``concurrency`` requests in flight, as boto3's own ``upload_file`` and
``download_file`` do (measured against them by bench/remote_store.py), and at most
``concurrency + 2`` parts in memory.

Upload: the blob's key names its content (``blobs/sha256/<hex>``), so the parts an earlier,
killed push left in an open multipart upload of that key came from the same bytes; a push
continues that upload (keeping every part whose size is right) instead of starting over.
Each part carries boto3's default request checksum, which the server checks on receipt.

Download: ranges are fetched in parallel but appended to the partial file in order, so the
file is always a prefix of the blob (a killed pull resumes like a Hub pull) and the sha256 is
computed over exactly the bytes written, before anything is published.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from llcuda_tui.core.errors import PullCancelled
from llcuda_tui.core.fmt import fmt_size
from llcuda_tui.core.store._fs import Progress
from llcuda_tui.core.store._remote_client import RemoteError, error_code

PART_SIZE = 8 << 20
"""Bytes per multipart part and per ranged GET (boto3's default ``multipart_chunksize``)."""
MIN_PART_SIZE = 5 << 20
"""S3's smallest part (all but the last)."""
MAX_PARTS = 10_000
CONCURRENCY = 10
"""Requests in flight per transfer (boto3's default ``max_concurrency``)."""
Status = Callable[[str], None]


@dataclass(frozen=True)
class Target:
    """One object in the bucket, with the client that reaches it."""

    client: Any
    bucket: str
    key: str


@dataclass(frozen=True)
class UploadOutcome:
    sent_bytes: int
    """Bytes this push sent."""
    resumed_bytes: int
    """Bytes of parts an earlier push had left in the bucket (not sent again)."""


class UploadVanished(Exception):
    """The multipart upload was completed or aborted by someone else while this push ran."""


def part_size_for(size: int, preferred: int = PART_SIZE) -> int:
    """A part size (whole MiB) that keeps ``size`` within S3's 10,000 parts."""
    need = -(-size // MAX_PARTS)
    mib = 1 << 20
    return max(preferred, MIN_PART_SIZE, -(-need // mib) * mib)


def _read_exact(fd: int, offset: int, length: int) -> bytes:
    chunks, done = [], 0
    while done < length:
        chunk = os.pread(fd, length - done, offset + done)
        if not chunk:
            raise OSError(f"unexpected end of file at {offset + done}")
        chunks.append(chunk)
        done += len(chunk)
    return b"".join(chunks)


# --- upload ----------------------------------------------------------------------------------


def upload(
    target: Target,
    path: Path,
    size: int,
    metadata: dict[str, str],
    *,
    part_size: int = PART_SIZE,
    concurrency: int = CONCURRENCY,
    on_progress: Progress | None = None,
    on_status: Status | None = None,
) -> UploadOutcome:
    """Put ``path`` at ``target`` (single PUT when it fits one part, else multipart, resuming
    an open upload of the same key). Raises :class:`UploadVanished` when someone else
    finished or aborted the upload mid-way (the caller checks what the bucket holds)."""
    part = part_size_for(size, part_size)
    if size <= part:
        with open(path, "rb") as fh:
            target.client.put_object(
                Bucket=target.bucket, Key=target.key, Body=fh, Metadata=metadata
            )
        if on_progress is not None:
            on_progress(size, size)
        return UploadOutcome(size, 0)
    upload_id, done = _open_upload(target, part, size, metadata)
    resumed = sum(_part_length(n, part, size) for n in done)
    if resumed and on_status is not None:
        on_status(f"resuming the upload: {fmt_size(resumed, 2)} already in the bucket")
    etags = dict(done)
    todo = [n for n in range(1, _parts(size, part) + 1) if n not in done]
    sent = 0
    fd = os.open(path, os.O_RDONLY)
    try:

        def send(n: int) -> tuple[int, str, int]:
            length = _part_length(n, part, size)
            data = _read_exact(fd, (n - 1) * part, length)
            r = target.client.upload_part(
                Bucket=target.bucket, Key=target.key, UploadId=upload_id, PartNumber=n, Body=data
            )
            return n, str(r["ETag"]), length

        # parts are handed out as others finish: a stalled caller stops the upload, too
        numbers = iter(todo)
        with cf.ThreadPoolExecutor(max(1, concurrency), thread_name_prefix="s3-up") as pool:
            running: set[cf.Future[tuple[int, str, int]]] = set()
            try:
                while True:
                    while len(running) < max(1, concurrency):
                        n = next(numbers, None)
                        if n is None:
                            break
                        running.add(pool.submit(send, n))
                    if not running:
                        break
                    finished, running = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                    for fut in finished:
                        n, etag, length = _vanished_if_gone(fut.result)
                        etags[n] = etag
                        sent += length
                        if on_progress is not None:
                            on_progress(resumed + sent, size)
            except BaseException:
                for fut in running:
                    fut.cancel()
                raise
    finally:
        os.close(fd)
    parts = [{"PartNumber": n, "ETag": etags[n]} for n in sorted(etags)]
    _vanished_if_gone(
        lambda: target.client.complete_multipart_upload(
            Bucket=target.bucket,
            Key=target.key,
            UploadId=upload_id,
            MultipartUpload={"Parts": parts},
        )
    )
    return UploadOutcome(sent, resumed)


def _parts(size: int, part: int) -> int:
    return -(-size // part)


def _part_length(n: int, part: int, size: int) -> int:
    return min(part, size - (n - 1) * part)


def _vanished_if_gone(call: Callable[[], Any]) -> Any:
    from botocore.exceptions import ClientError

    try:
        return call()
    except ClientError as exc:
        if error_code(exc) == "NoSuchUpload":
            raise UploadVanished() from None
        raise


def _open_upload(
    target: Target, part: int, size: int, metadata: dict[str, str]
) -> tuple[str, dict[int, str]]:
    """(upload id, {part number: ETag} of the parts already there): the newest open upload of
    the key, else a new one."""
    s3 = target.client
    uploads = []
    pages = s3.get_paginator("list_multipart_uploads").paginate(
        Bucket=target.bucket, Prefix=target.key
    )
    for page in pages:
        uploads += [u for u in page.get("Uploads", []) if u.get("Key") == target.key]
    for u in sorted(uploads, key=lambda u: u["Initiated"], reverse=True):
        try:
            done = _parts_done(target, u["UploadId"], part, size)
        except UploadVanished:
            continue
        return str(u["UploadId"]), done
    r = s3.create_multipart_upload(Bucket=target.bucket, Key=target.key, Metadata=metadata)
    return str(r["UploadId"]), {}


def _parts_done(target: Target, upload_id: str, part: int, size: int) -> dict[int, str]:
    """The uploaded parts that have the size this push would give them."""
    done: dict[int, str] = {}
    pages = target.client.get_paginator("list_parts").paginate(
        Bucket=target.bucket, Key=target.key, UploadId=upload_id
    )
    for page in _vanished_if_gone(lambda: list(pages)):
        for p in page.get("Parts", []):
            n = int(p["PartNumber"])
            if 1 <= n <= _parts(size, part) and int(p["Size"]) == _part_length(n, part, size):
                done[n] = str(p["ETag"])
    return done


def upload_activity(client: Any, bucket: str, key: str, upload_id: str) -> list[Any]:
    """When an open upload last changed: its parts' LastModified (empty: no parts yet)."""
    pages = client.get_paginator("list_parts").paginate(Bucket=bucket, Key=key, UploadId=upload_id)
    return [p["LastModified"] for page in pages for p in page.get("Parts", [])]


# --- download --------------------------------------------------------------------------------


class Sink(Protocol):
    """Where downloaded bytes go, in order: the store's partial file (hashes as it writes)."""

    size: int

    def append(self, chunk: bytes) -> None: ...


def download(
    target: Target,
    sink: Sink,
    offset: int,
    size: int,
    *,
    part_size: int = PART_SIZE,
    concurrency: int = CONCURRENCY,
    on_progress: Progress | None = None,
    cancel: threading.Event | None = None,
    label: str = "",
) -> int:
    """Fetch bytes ``offset..size`` of ``target`` into ``sink`` (``append`` in order, ``size``
    so far); the bytes received. Ranges are fetched ``concurrency`` at a time."""
    if offset >= size:
        return 0
    starts = iter(range(offset, size, part_size))
    window = max(1, concurrency) + 2
    received = 0

    def fetch(start: int) -> bytes:
        end = min(start + part_size, size) - 1
        r = target.client.get_object(
            Bucket=target.bucket, Key=target.key, Range=f"bytes={start}-{end}"
        )
        data = r["Body"].read()
        if len(data) != end - start + 1:
            raise RemoteError(
                f"{label}: the bucket sent {len(data)} of {end - start + 1} bytes at {start}; "
                "pull it again to resume"
            )
        return bytes(data)

    with cf.ThreadPoolExecutor(max(1, concurrency), thread_name_prefix="s3-down") as pool:
        pending: deque[cf.Future[bytes]] = deque()
        try:
            while True:
                while len(pending) < window:
                    start = next(starts, None)
                    if start is None:
                        break
                    pending.append(pool.submit(fetch, start))
                if not pending:
                    break
                chunk = pending.popleft().result()
                sink.append(chunk)
                received += len(chunk)
                if on_progress is not None:
                    on_progress(sink.size, size)
                if cancel is not None and cancel.is_set():
                    raise PullCancelled(
                        f"pull of {label} cancelled at {fmt_size(sink.size, 2)}: "
                        "pull it again to resume"
                    )
        finally:
            for fut in pending:
                fut.cancel()
    return received
