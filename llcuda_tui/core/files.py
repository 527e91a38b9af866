"""Writing a file so that a reader sees the old or the new one, never a part.

Here, not in the store, because the config file is written this way too and the config must
not depend on the store (the store reads the config)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write all of ``data`` to ``fd`` (``os.write`` may write less than it was given)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def fsync_dir(path: Path) -> None:
    """Make a rename or link inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def unique_suffix() -> str:
    """``PID-hex``: unique among live processes, and says whose temp file it is."""
    return f"{os.getpid()}-{os.urandom(4).hex()}"


def write_temp(
    tmp: Path,
    data: bytes,
    mode: int = 0o644,
    write: Callable[[int, bytes | memoryview], None] = write_all,
) -> None:
    """Create ``tmp`` (it must not exist), write ``data``, fsync it and give it ``mode``: a
    whole file, ready to be renamed or linked into place. Raises ``OSError``."""
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        write(fd, data)
        os.fsync(fd)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def replace_file(
    path: Path,
    data: bytes,
    tmp_dir: Path,
    mode: int = 0o644,
    write: Callable[[int, bytes | memoryview], None] = write_all,
) -> None:
    """Write ``data`` to a temp file in ``tmp_dir``, fsync it, rename it over ``path``.

    Raises ``OSError`` (the temp file removed); callers turn it into their own error."""
    tmp = tmp_dir / f"w-{unique_suffix()}.tmp"
    try:
        write_temp(tmp, data, mode, write)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def write_new(directory: Path, name: str, data: bytes, mode: int = 0o644) -> Path:
    """Write ``data`` to ``directory/name``, or when that exists to ``stem-2.ext``,
    ``stem-3.ext``, …: never over a file that is there. The file appears whole (a temp file,
    fsynced, then hardlinked to the free name: the link fails if the name was taken
    meanwhile, so two writers never share one). The path written. Raises ``OSError``."""
    directory.mkdir(parents=True, exist_ok=True)
    stem, dot, ext = name.rpartition(".") if "." in name else (name, "", "")
    tmp = directory / f".w-{unique_suffix()}.tmp"
    try:
        write_temp(tmp, data, mode)
        n = 1
        while True:
            path = directory / (name if n == 1 else f"{stem}-{n}{dot}{ext}")
            try:
                _link_or_copy(tmp, path, data, mode)
            except FileExistsError:
                n += 1
                continue
            break
        fsync_dir(directory)
        return path
    finally:
        tmp.unlink(missing_ok=True)


def _link_or_copy(tmp: Path, path: Path, data: bytes, mode: int) -> None:
    """Hardlink ``tmp`` to ``path``; where the filesystem has no hardlinks, create ``path``
    exclusively and write ``data`` (removed again if that fails). FileExistsError if taken."""
    try:
        os.link(tmp, path)
        return
    except FileExistsError:
        raise
    except OSError:
        pass  # no hardlinks here (EPERM, ENOTSUP on some FUSE and FAT mounts)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        write_all(fd, data)
        os.fsync(fd)
    except OSError:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)


COMPLETE_SCAN_LIMIT = 2000
"""Entries of one directory looked at to complete a path (a huge directory is not read
whole on every key)."""


def complete_path(typed: str, suffixes: tuple[str, ...] = ()) -> str | None:
    """``typed`` completed as far as it is unambiguous: ``~/mo`` -> ``~/models/`` when that
    is the only match, else up to the matches' common prefix; files only with one of
    ``suffixes`` (any file when empty), directories always (with a ``/``). None when
    nothing longer matches. Hidden entries only when the typed name starts with a dot."""
    if not typed:
        return None
    expanded = os.path.expanduser(typed)
    directory, partial = os.path.split(expanded)
    names: list[str] = []
    try:
        with os.scandir(directory or ".") as entries:
            for i, entry in enumerate(entries):
                if i >= COMPLETE_SCAN_LIMIT:
                    break
                name = entry.name
                if not name.startswith(partial) or (name.startswith(".") and partial[:1] != "."):
                    continue
                try:
                    is_dir = entry.is_dir()
                except OSError:
                    continue
                if is_dir:
                    names.append(name + "/")
                elif not suffixes or name.lower().endswith(suffixes):
                    names.append(name)
    except OSError:
        return None
    if not names:
        return None
    # the common prefix of all of them is that of the first and last in sorted order
    first, last = min(names), max(names)
    pairs = enumerate(zip(first, last, strict=False))
    common = first[: next((i for i, (a, b) in pairs if a != b), len(first))]
    if len(common) <= len(partial):
        return None
    return typed + common[len(partial) :]
