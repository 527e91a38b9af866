"""What a stored model is: its source, its files and its GGUF summary (the manifest).

A manifest is immutable: its file is named by the sha256 of its canonical JSON, so the
records here read and write exactly the JSON the store has always written (old manifests
load, and one that is published again keeps its digest).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from llcuda_tui.core.store._fs import canonical_json

if TYPE_CHECKING:
    from llcuda_tui.core.gguf import GgufSummary

ISO_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def iso_utc(ts: float | None) -> str | None:
    """Epoch seconds as '2025-01-31T12:00:00Z' (None stays None)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime(ISO_FORMAT)


def parse_iso_utc(text: str) -> float:
    """The epoch seconds of an :func:`iso_utc` text; 0.0 when it is not one."""
    try:
        return datetime.strptime(text, ISO_FORMAT).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return 0.0


# --- where a model came from ----------------------------------------------------------------


@dataclass(frozen=True)
class HfSource:
    """A Hugging Face repo at a commit: pulled, or adopted from the HF cache."""

    kind: ClassVar[str] = "hf"
    repo: str
    commit: str
    revision: str | None = "main"
    """What the user asked for (a branch, tag or commit); the commit is what it meant then."""
    adopted_from: str | None = None
    """'hf-cache' when the files were hardlinked from huggingface_hub's cache."""

    def describe(self) -> str:
        return f"hf {self.repo}@{self.commit[:12]}"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "repo": self.repo, "commit": self.commit}
        if self.revision is not None:
            d["revision"] = self.revision
        if self.adopted_from is not None:
            d["adopted_from"] = self.adopted_from
        return d


@dataclass(frozen=True)
class StarterSource:
    """One of the starter models (shipped as a PyPI package)."""

    kind: ClassVar[str] = "starter"
    name: str
    package: str

    def describe(self) -> str:
        return f"starter package {self.package}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "package": self.package}


@dataclass(frozen=True)
class FileSource:
    """A local file that was imported (the path it had then)."""

    kind: ClassVar[str] = "import"
    path: str

    def describe(self) -> str:
        return f"imported {Path(self.path).name}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.path}


@dataclass(frozen=True)
class QuantizedSource:
    """Made here by ``llcuda models quantize`` from another stored model (the provenance)."""

    kind: ClassVar[str] = "quantized"
    source_sha256: str
    """The sha256 of the model file that was quantized."""
    source_name: str
    type: str
    """The llama.cpp quantization type, e.g. 'Q4_K_M'."""
    source_quant: str = ""
    """The source's own type ('F16'; a quantized type when re-quantization was allowed)."""
    requantized: bool = False
    imatrix_sha256: str | None = None
    llama_cpp_version: str | None = None

    def describe(self) -> str:
        return f"quantized {self.type} from {self.source_name} ({self.source_sha256[:12]})"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "kind": self.kind,
            "source_sha256": self.source_sha256,
            "source_name": self.source_name,
            "type": self.type,
            "source_quant": self.source_quant,
            "requantized": self.requantized,
        }
        if self.imatrix_sha256 is not None:
            d["imatrix_sha256"] = self.imatrix_sha256
        if self.llama_cpp_version is not None:
            d["llama_cpp_version"] = self.llama_cpp_version
        return d


Source = HfSource | StarterSource | FileSource | QuantizedSource


def source_from_dict(d: dict[str, Any]) -> Source:
    """The source record of a manifest's ``source`` object."""
    kind = d.get("kind")
    if kind == HfSource.kind:
        return HfSource(str(d["repo"]), str(d["commit"]), d.get("revision"), d.get("adopted_from"))
    if kind == StarterSource.kind:
        return StarterSource(str(d["name"]), str(d["package"]))
    if kind == QuantizedSource.kind:
        return QuantizedSource(
            str(d["source_sha256"]),
            str(d["source_name"]),
            str(d["type"]),
            str(d.get("source_quant", "")),
            bool(d.get("requantized", False)),
            d.get("imatrix_sha256"),
            d.get("llama_cpp_version"),
        )
    return FileSource(str(d.get("path")))


# --- the manifest ---------------------------------------------------------------------------


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

    def to_dict(self) -> dict[str, Any]:
        return {"role": self.role, "path": self.path, "sha256": self.sha256, "size": self.size}


@dataclass(frozen=True)
class Manifest:
    """What a stored model is. Immutable: its file is named by the sha256 of its JSON."""

    source: Source
    files: tuple[ManifestFile, ...]
    gguf: dict[str, Any]
    created: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": 1,
            "source": self.source.to_dict(),
            "files": [f.to_dict() for f in self.files],
            "gguf": self.gguf,
            "created": self.created,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        files = tuple(ManifestFile(**f) for f in d["files"])
        source = source_from_dict(dict(d["source"]))
        return cls(source, files, dict(d.get("gguf") or {}), str(d["created"]))

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
        from llcuda_tui.core.gguf import GgufSummary

        return GgufSummary.from_dict(self.gguf) if self.gguf.get("arch") else None
