"""Hugging Face Hub access through ``huggingface_hub`` (imported lazily).

Metadata (revision -> commit, the repo tree with LFS sha256 and sizes, file HEAD) comes from
``HfApi`` and ``get_hf_file_metadata``; downloads stream through huggingface_hub's own HTTP
session so the store can hash while writing and resume with a Range request.
``HF_ENDPOINT``, ``HF_TOKEN`` and ``HF_HUB_OFFLINE`` are read when a call is made, not at import.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from llcuda_tui.core.errors import LlcudaError, UserInputError
from llcuda_tui.core.gguf import quant_from_filename, split_info
from llcuda_tui.core.store._errors import UnsafeNameError

DEFAULT_ENDPOINT = "https://huggingface.co"
_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")


class HubError(LlcudaError):
    """The Hub could not be reached or refused a request (runtime failure)."""


class HubNotFoundError(UserInputError):
    """No such repository, revision or file on the Hub."""


class OfflineError(HubError):
    """``HF_HUB_OFFLINE`` is set and the answer needs the network."""


class HubTransferError(HubError):
    """A download broke off mid-way (network); the partial file can resume."""


@dataclass(frozen=True)
class RemoteFile:
    """One file of a Hub repo: its path, size and (for LFS files) sha256."""

    path: str
    size: int
    sha256: str | None = None
    git_oid: str | None = None
    """The git blob id (sha1 of ``blob <size>\\0`` + content) for files not in LFS."""


@dataclass(frozen=True)
class RemoteModel:
    """One loadable model of a repo: a single GGUF or all shards of a split one."""

    quant: str
    files: tuple[RemoteFile, ...]
    complete: bool = True
    """False when shards of a split model are missing from the repo."""

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def first(self) -> RemoteFile:
        return self.files[0]


@dataclass(frozen=True)
class RepoListing:
    repo: str
    commit: str
    models: tuple[RemoteModel, ...]
    rejected: tuple[str, ...] = ()
    """GGUF paths refused because they would escape the store."""


@dataclass(frozen=True)
class Download:
    """An open download: bytes from ``start`` on (0 when the server ignored the Range)."""

    start: int
    total: int | None
    chunks: Iterator[bytes]


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def is_offline() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().lower() in ("1", "true", "yes", "on")


def token() -> str | bool:
    """``HF_TOKEN`` (or huggingface_hub's stored login); False for none."""
    from huggingface_hub import get_token

    return os.environ.get("HF_TOKEN") or get_token() or False


def check_repo_id(repo: str) -> str:
    if not _REPO_RE.match(repo) or ".." in repo:
        raise UserInputError(f"'{repo}' is not a Hugging Face repo id (expected owner/name)")
    return repo


def check_remote_path(path: str) -> str:
    """``path`` if it is a plain relative GGUF path inside a repo, else UnsafeNameError."""
    parts = path.split("/")
    bad = (
        not path
        or path.startswith("/")
        or "\\" in path
        or "\x00" in path
        or any(p in ("", ".", "..") for p in parts)
        or re.match(r"^[A-Za-z]:", path) is not None
    )
    if bad:
        raise UnsafeNameError(f"refusing file name '{path}': it would escape the store")
    if not path.lower().endswith(".gguf"):
        raise UserInputError(f"'{path}' is not a .gguf file")
    return path


def require_online(what: str) -> None:
    if is_offline():
        raise OfflineError(f"HF_HUB_OFFLINE is set: cannot {what} (unset it to reach the Hub)")


def resolve_commit(repo: str, revision: str | None = None) -> str:
    """The commit sha that ``revision`` (default: main) of ``repo`` points at."""
    check_repo_id(repo)
    require_online(f"resolve {repo}")
    with hub_errors(repo, revision):
        info = _api().model_info(repo, revision=revision)
    if not info.sha or not _COMMIT_RE.match(info.sha):
        raise HubError(f"{endpoint()} returned no commit for {repo}@{revision or 'main'}")
    return str(info.sha)


def list_models(repo: str, commit: str) -> RepoListing:
    """Every GGUF model in ``repo`` at ``commit``, split shards grouped, unsafe names rejected."""
    from huggingface_hub.hf_api import RepoFile

    require_online(f"list {repo}")
    files: list[RemoteFile] = []
    rejected: list[str] = []
    with hub_errors(repo, commit):
        entries = list(_api().list_repo_tree(repo, revision=commit, recursive=True))
    for entry in entries:
        if not isinstance(entry, RepoFile) or not entry.path.lower().endswith(".gguf"):
            continue
        try:
            check_remote_path(entry.path)
        except UnsafeNameError:
            rejected.append(entry.path)
            continue
        lfs = entry.lfs
        sha = lfs.sha256.lower() if lfs is not None and lfs.sha256 else None
        files.append(RemoteFile(entry.path, int(entry.size), sha, None if sha else entry.blob_id))
    return RepoListing(repo, commit, tuple(group_models(files)), tuple(rejected))


def list_repo(repo: str, revision: str | None = None) -> RepoListing:
    """The GGUF models of a Hub repo at ``revision`` (default: main), at the commit it means."""
    repo = repo.strip()
    return list_models(repo, resolve_commit(repo, revision))


def group_models(files: list[RemoteFile]) -> list[RemoteModel]:
    """Single GGUFs as they are; ``-0000N-of-0000M`` shards grouped into one model."""
    singles: list[RemoteModel] = []
    groups: dict[tuple[str, int], list[tuple[int, RemoteFile]]] = {}
    for f in files:
        info = split_info(f.path)
        if info is None:
            singles.append(RemoteModel(_quant_label(f.path), (f,)))
            continue
        prefix, number, count = info
        directory = f.path.rpartition("/")[0]
        groups.setdefault((f"{directory}/{prefix}", count), []).append((number, f))
    for (_, count), shards in groups.items():
        shards.sort(key=lambda s: s[0])
        complete = [n for n, _ in shards] == list(range(1, count + 1))
        ordered = tuple(f for _, f in shards)
        singles.append(RemoteModel(_quant_label(ordered[0].path), ordered, complete))
    return sorted(singles, key=lambda m: (m.quant, m.first.path))


def _quant_label(path: str) -> str:
    return quant_from_filename(path) or path.rpartition("/")[2].removesuffix(".gguf")


def file_url(repo: str, commit: str, path: str) -> str:
    from huggingface_hub import hf_hub_url

    return str(hf_hub_url(repo, path, revision=commit, endpoint=endpoint()))


def file_metadata(repo: str, commit: str, path: str) -> Any:
    """huggingface_hub's HfFileMetadata (etag, size, commit) from a HEAD on the file."""
    from huggingface_hub import get_hf_file_metadata

    require_online(f"download {repo}/{path}")
    with hub_errors(repo, commit, path):
        return get_hf_file_metadata(file_url(repo, commit, path), token=token())


@contextmanager
def open_download(repo: str, commit: str, path: str, offset: int = 0) -> Iterator[Download]:
    """Stream ``path`` from byte ``offset`` (a Range request when > 0)."""
    import httpx2
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    require_online(f"download {repo}/{path}")
    headers = build_hf_headers(token=token())
    headers["Accept-Encoding"] = "identity"
    if offset > 0:
        headers["Range"] = f"bytes={offset}-"
    url = file_url(repo, commit, path)
    timeout = httpx2.Timeout(30.0, connect=15.0)
    with (
        hub_errors(repo, commit, path),
        get_session().stream(
            "GET", url, headers=headers, timeout=timeout, follow_redirects=True
        ) as response,
    ):
        hf_raise_for_status(response)
        start, total = _range_of(response, offset)
        yield Download(start, total, response.iter_bytes())


def _range_of(response: Any, offset: int) -> tuple[int, int | None]:
    """(first byte, total size) of a 200 or 206 response."""
    length = response.headers.get("Content-Length")
    if response.status_code != 206:
        return 0, int(length) if length is not None else None
    m = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", response.headers.get("Content-Range", ""))
    if m is None:
        raise HubError(f"bad Content-Range from {endpoint()}: a 206 without a byte range")
    total = None if m.group(3) == "*" else int(m.group(3))
    start = int(m.group(1))
    if start != offset:
        raise HubError(f"{endpoint()} answered a Range request for byte {offset} at {start}")
    return start, total


@contextmanager
def hub_errors(repo: str, revision: str | None = None, path: str | None = None) -> Iterator[None]:
    """Turn huggingface_hub and HTTP exceptions into one-line llcuda errors."""
    import httpx2
    from huggingface_hub import errors

    where = f"{repo}@{revision}" if revision else repo
    try:
        yield
    except errors.OfflineModeIsEnabled:
        raise OfflineError(
            f"HF_HUB_OFFLINE is set: cannot reach the Hub for {where} (unset it to reach the Hub)"
        ) from None
    except errors.GatedRepoError:
        raise HubError(f"{repo} is gated: accept its terms on the Hub, then set HF_TOKEN") from None
    except errors.RepositoryNotFoundError:
        raise HubNotFoundError(
            f"no repository {repo} on {endpoint()} (private repos need HF_TOKEN)"
        ) from None
    except errors.RevisionNotFoundError:
        raise HubNotFoundError(f"no revision '{revision}' in {repo}") from None
    except errors.RemoteEntryNotFoundError:
        raise HubNotFoundError(f"no file {path} in {where}") from None
    except errors.HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        raise HubError(f"the Hub refused a request for {where} (HTTP {status})") from None
    except httpx2.TransportError as exc:
        raise HubTransferError(
            f"cannot reach {endpoint()} ({type(exc).__name__}): {reach_hint()}"
        ) from None
    except httpx2.HTTPError as exc:
        raise HubError(
            f"cannot reach {endpoint()} ({type(exc).__name__}: {exc}): {reach_hint()}"
        ) from None


def reach_hint() -> str:
    """What to check when the Hub does not answer, in one line (the three settings that
    decide where and whether it is asked)."""
    where = (
        f"HF_ENDPOINT={os.environ['HF_ENDPOINT']}"
        if os.environ.get("HF_ENDPOINT")
        else "HF_ENDPOINT for a mirror"
    )
    return f"check the network and {where}; HF_HUB_OFFLINE=1 uses only the models in the store"


def _api() -> Any:
    from huggingface_hub import HfApi

    return HfApi(endpoint=endpoint(), token=token())
