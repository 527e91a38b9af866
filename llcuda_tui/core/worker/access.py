"""How this side names and reaches its workers: a worker URL as the user typed it, the API key
file and the CA file of ``llcuda tui --api-key-file/--ca-cert`` (and ``llcuda serve``'s key).

The TUI's "Attach worker" dialog and the command line check the same way through these, so a
bad URL or an unreadable key file reads the same in both: one line, no traceback.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from llcuda_tui.core.errors import UserInputError

if TYPE_CHECKING:
    from llcuda_tui.core.worker.client import RemoteEngine


@dataclass(frozen=True)
class WorkerAccess:
    """How this side reaches its workers: the API key they want (None: none) and how TLS
    certificates are checked (True: the system's CAs, a path: that CA bundle). Here, not
    beside the client: the TUI holds one from its start and the client (its HTTP stack)
    loads only when a worker is attached."""

    api_key: str | None = field(default=None, repr=False)
    verify: bool | str = True

    def connect(self, url: str, **kwargs: Any) -> RemoteEngine:
        from llcuda_tui.core.worker.client import RemoteEngine

        return RemoteEngine.connect(url, self.api_key, verify=self.verify, **kwargs)


MIN_API_KEY_CHARS = 8
MAX_KEY_FILE_BYTES = 4096
"""A key file holds one line: anything larger (``/dev/zero``, a log) is not one."""


def check_worker_url(url: str) -> str:
    """``url`` if it names an http(s) worker (``http://host:port``), else ValueError."""
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"worker URL '{url}' must look like http://host:port")
    return url


def read_api_key(path: str) -> str:
    """The key in ``path`` (first line, stripped); one clear line if unusable."""
    try:
        text = _read_small(Path(path), MAX_KEY_FILE_BYTES, "--api-key-file").decode("utf-8")
    except OSError as exc:
        raise UserInputError(f"cannot read --api-key-file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UserInputError(f"--api-key-file {path} is not UTF-8 text") from None
    key = text.strip().splitlines()[0].strip() if text.strip() else ""
    if not key:
        raise UserInputError(f"--api-key-file {path} is empty")
    if len(key) < MIN_API_KEY_CHARS:
        raise UserInputError(
            f"the API key in {path} is too short ({MIN_API_KEY_CHARS} characters at least)"
        )
    return key


def _read_small(path: Path, limit: int, what: str) -> bytes:
    """The bytes of the regular file ``path`` if it holds at most ``limit``; one clear line
    otherwise (a device or FIFO would be read until memory ran out)."""
    with open(path, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise UserInputError(f"{what} {path} is not a regular file")
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise UserInputError(f"{what} {path} is larger than {limit} bytes: not a key file")
    return data


def worker_access(api_key_file: str | None, ca_cert: str | None) -> WorkerAccess:
    """The ``WorkerAccess`` for ``--api-key-file`` / ``--ca-cert`` (one clear line if unusable)."""

    api_key = read_api_key(api_key_file) if api_key_file else None
    if ca_cert is not None and not Path(ca_cert).is_file():
        raise UserInputError(f"--ca-cert {ca_cert}: no such file")
    return WorkerAccess(api_key, ca_cert if ca_cert is not None else True)
