"""The team store's keys and records: where each object lives in the bucket, what a name
holds (:class:`RemoteEntry`) and what a push did (:class:`PushResult`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

from llcuda_tui.core.store._layout import SHA256_RE
from llcuda_tui.core.store._manifest import Manifest


@dataclass(frozen=True)
class BucketLayout:
    """The keys of the team store under ``prefix`` ('' or 'a/b/')."""

    prefix: str = ""

    @property
    def blobs(self) -> str:
        return f"{self.prefix}blobs/sha256/"

    @property
    def manifests(self) -> str:
        return f"{self.prefix}manifests/"

    @property
    def names(self) -> str:
        return f"{self.prefix}names/"

    def blob(self, sha256: str) -> str:
        return f"{self.blobs}{sha256}"

    def manifest(self, digest: str) -> str:
        return f"{self.manifests}{digest}.json"

    def name(self, name: str) -> str:
        return f"{self.names}{quote(name, safe='')}.json"

    def name_of(self, key: str) -> str | None:
        """The model name a ``names/`` key holds, or None for a key that is not one."""
        if not key.startswith(self.names) or not key.endswith(".json"):
            return None
        return unquote(key[len(self.names) : -len(".json")]) or None


@dataclass(frozen=True)
class RemoteEntry:
    """One name in the team store: what ``remote ls`` shows, and the manifest for ``show``."""

    name: str
    digest: str
    size: int
    quant: str
    sha256: str
    pushed: str
    manifest: Manifest | None = None

    def to_json(self) -> dict[str, Any]:
        d = self.record()
        if self.manifest is not None:
            m = self.manifest
            d |= {"source": m.source.to_dict(), "files": [f.to_dict() for f in m.files]}
            d |= {"gguf": m.gguf, "created": m.created}
        return d

    def record(self) -> dict[str, Any]:
        """The JSON of its ``names/`` object."""
        return {
            "name": self.name,
            "manifest": self.digest,
            "size": self.size,
            "quant": self.quant,
            "sha256": self.sha256,
            "pushed": self.pushed,
        }


@dataclass(frozen=True)
class PushResult:
    """What a push did: the name as the team store has it now, and the bytes it sent."""

    entry: RemoteEntry
    uploaded_bytes: int = 0
    resumed_bytes: int = 0
    """Bytes of parts an earlier, interrupted push had left in the bucket."""
    skipped_files: int = 0
    """Blobs already in the bucket with the same size and sha256."""
    up_to_date: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            **self.entry.to_json(),
            "uploaded_bytes": self.uploaded_bytes,
            "resumed_bytes": self.resumed_bytes,
            "skipped_files": self.skipped_files,
            "up_to_date": self.up_to_date,
        }


def entry_from(record: Any, name: str) -> RemoteEntry | None:
    """The entry a ``names/`` object holds, or None when it is not a valid one for ``name``."""
    if not isinstance(record, dict) or record.get("name") != name:
        return None
    digest = str(record.get("manifest", ""))
    if not SHA256_RE.match(digest):
        return None
    try:
        return RemoteEntry(
            name, digest, int(record.get("size") or 0), str(record.get("quant") or ""),
            str(record.get("sha256") or ""), str(record.get("pushed") or ""),
        )  # fmt: skip
    except (TypeError, ValueError):
        return None


def match_name(wanted: str, names: list[str]) -> str | None:
    """The name ``wanted`` means among ``names``: exact, any case, or ``owner/repo`` when the
    repo has one quant (the local store's rules)."""
    if wanted in names:
        return wanted
    lowered = [n for n in names if n.lower() == wanted.lower()]
    if len(lowered) == 1:
        return lowered[0]
    if ":" not in wanted:
        prefixed = [n for n in names if n.lower().startswith(wanted.lower() + ":")]
        if len(prefixed) == 1:
            return prefixed[0]
    return None
