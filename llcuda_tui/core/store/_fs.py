"""File primitives of the model store: atomic writes, hashing, locks, fingerprints, and the
writer's pid in a temp file's name.

Every byte the store writes goes through :func:`write_all`, the one seam a test may swap
(to inject ``ENOSPC``); nothing else in the store writes file contents directly.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llcuda_tui.core import files
from llcuda_tui.core.store._errors import StoreError, StoreFullError

if TYPE_CHECKING:
    from filelock import BaseFileLock

CHUNK = 1 << 20
Progress = Callable[[int, int], None]
"""``on_progress(done_bytes, total_bytes)``."""


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write all of ``data`` to ``fd`` (the store's only write call; tests swap it)."""
    files.write_all(fd, data)


def is_disk_full(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)


fsync_dir = files.fsync_dir
unique_suffix = files.unique_suffix


def writer_pid(path: Path) -> int | None:
    """The writer's pid from a temp name made with :func:`unique_suffix` (``key.PID-hex.part``)."""
    m = re.search(r"\.(\d+)-[0-9a-f]+\.[a-z]+$", path.name) or re.search(
        r"-(\d+)-[0-9a-f]+\.[a-z]+$", path.name
    )
    return int(m.group(1)) if m else None


def pid_alive(pid: int) -> bool:
    """True while process ``pid`` exists (even when it belongs to another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fingerprint(path: Path) -> str:
    """Size, mtime, inode and device of ``path``: a blob whose fingerprint is unchanged since
    its last full hash is taken as unchanged (the quick check)."""
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}:{st.st_dev}"


def unlink_quietly(path: Path) -> None:
    """Remove ``path``; already gone is fine; any other failure (a read-only store) is one
    line naming the file."""
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        if os.path.lexists(path):  # a read-only filesystem refuses even a missing file's unlink
            raise os_error(exc, f"cannot remove {path}") from None


def atomic_write(path: Path, data: bytes, tmp_dir: Path, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never a part."""
    try:
        # late-bound: a test swaps write_all to fill the disk
        files.replace_file(path, data, tmp_dir, mode, write=lambda fd, d: write_all(fd, d))
    except OSError as exc:
        raise os_error(exc, f"cannot write {path}") from None


def atomic_write_json(path: Path, obj: Any, tmp_dir: Path, mode: int = 0o644) -> None:
    atomic_write(path, canonical_json(obj), tmp_dir, mode)


def canonical_json(obj: Any) -> bytes:
    """The one byte encoding of ``obj`` that manifests are hashed over."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def read_json(path: Path) -> Any:
    with open(path, "rb") as fh:
        return json.loads(fh.read())


def is_read_only(exc: OSError) -> bool:
    """A write refused because the filesystem is mounted read-only (EROFS), or because the
    file (or the folder a new one goes in) can be read but not written: immutable
    (``chattr +i``: EPERM, even for root) or not this user's to write (EACCES). A file that
    cannot even be read (an import's unreadable source) is a plain permission error."""
    if exc.errno == errno.EROFS:
        return True
    if exc.errno not in (errno.EPERM, errno.EACCES) or not isinstance(exc.filename, str | bytes):
        return False
    path = os.fsdecode(exc.filename)
    if not os.path.lexists(path):
        path = os.path.dirname(path) or "."
    return os.access(path, os.R_OK) and not os.access(path, os.W_OK)


def os_error(exc: OSError, what: str) -> StoreError:
    """A store error (one line) for an OSError while doing ``what``."""
    if is_disk_full(exc):
        return StoreFullError(f"disk full: {what}; free some space and retry")
    if is_read_only(exc):
        return StoreError(
            f"{what}: the store is read-only ({exc.strerror}); it can list, show, verify and "
            "load models, not change them"
        )
    if exc.errno == errno.EXDEV:  # blobs/ (or tmp/) is a link to another filesystem
        return StoreError(
            f"{what}: the store's blobs/ and tmp/ are on different filesystems "
            "(keep the whole store directory on one filesystem, or move it with LLCUDA_HOME)"
        )
    return StoreError(f"{what}: {exc.strerror or exc}")


def hash_file(
    path: Path,
    on_progress: Progress | None = None,
    limit: int | None = None,
    hasher: Any = None,
) -> Any:
    """sha256 (or ``hasher``) over ``path``'s first ``limit`` bytes (all when None)."""
    h = hasher if hasher is not None else hashlib.sha256()
    total = limit if limit is not None else path.stat().st_size
    done = 0
    with open(path, "rb", buffering=0) as fh:
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        while done < total:
            n = fh.readinto(view[: min(CHUNK, total - done)])
            if not n:
                break
            h.update(view[:n])
            done += n
            if on_progress is not None:
                on_progress(done, total)
    return h


def sha256_file(path: Path, on_progress: Progress | None = None) -> str:
    return str(hash_file(path, on_progress).hexdigest())


_SHA256_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a model file (for the run record), cached by path, size and mtime."""
    st = Path(path).stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _SHA256_CACHE:
        _SHA256_CACHE[key] = sha256_file(Path(path))
    return _SHA256_CACHE[key]


def same_filesystem(a: Path, b: Path) -> bool:
    return a.stat().st_dev == b.stat().st_dev


def link_or_copy(
    src: Path, dst_tmp: Path, on_progress: Progress | None = None
) -> tuple[bool, str | None]:
    """Hardlink ``src`` to ``dst_tmp``, or copy it when they are on different filesystems.

    Returns (linked, sha256): a copy is hashed while it is written (sha256 set); a link is
    not (None) and must be hashed by the caller.
    """
    try:
        os.link(src, dst_tmp)
        return True, None
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            raise os_error(exc, f"cannot link {src}") from None
    return False, copy_hashing(src, dst_tmp, on_progress)


def copy_hashing(src: Path, dst: Path, on_progress: Progress | None = None) -> str:
    """Copy ``src`` to a new file ``dst`` (fsynced), returning the sha256 of what was copied."""
    h = hashlib.sha256()
    total = src.stat().st_size
    done = 0
    try:
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            with open(src, "rb", buffering=0) as fh:
                while chunk := fh.read(CHUNK):
                    write_all(fd, chunk)
                    h.update(chunk)
                    done += len(chunk)
                    if on_progress is not None:
                        on_progress(done, total)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        dst.unlink(missing_ok=True)
        raise os_error(exc, f"cannot copy {src}") from None
    return h.hexdigest()


@contextmanager
def file_lock(path: Path, timeout: float = -1) -> Iterator[None]:
    """An exclusive inter-process lock on ``path`` (filelock; released if the process dies)."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(path), timeout=timeout, thread_local=False)
    try:
        lock.acquire()
    except Timeout:
        raise StoreError(f"{path.name} is locked by another llcuda process; try again") from None
    except OSError as exc:  # a lock file cannot be created: a read-only store, a full disk
        raise os_error(exc, f"cannot create the lock {path}") from None
    try:
        yield
    finally:
        lock.release()


def try_lock(path: Path) -> BaseFileLock | None:
    """The acquired lock on ``path``, or None when another process holds it."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(path), timeout=0, thread_local=False)
    try:
        lock.acquire()
    except Timeout:
        return None
    except OSError as exc:
        raise os_error(exc, f"cannot create the lock {path}") from None
    return lock


def age_s(path: Path, now: float | None = None) -> float:
    """Seconds since ``path`` last changed (status change: covers links and renames)."""
    st = path.lstat()
    return (now or time.time()) - max(st.st_mtime, st.st_ctime)
