"""Turn what the user typed (a path, a store name, a starter name) into a model file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from llcuda_tui.core.config import Paths
from llcuda_tui.core.errors import ModelNotFoundError
from llcuda_tui.core.store._starter import STARTERS, starter_path
from llcuda_tui.core.store._store import resolve_name


@dataclass(frozen=True)
class ResolvedModel:
    """A model file to load, with the name it was asked for."""

    path: Path
    name: str
    sha256: str | None = None
    """Content hash when known (store entries, checked starter models)."""


def resolve_model(spec: str, paths: Paths) -> ResolvedModel:
    """Resolve ``spec``: an existing file path, then a store name, then a starter name, then a
    name in the team store (pulled into the store first)."""
    if not spec:
        raise ModelNotFoundError("no model given")
    candidate = Path(spec).expanduser()
    looks_like_path = spec.endswith(".gguf") or spec.startswith(("/", "./", "../", "~"))
    if candidate.exists() or looks_like_path:
        if not candidate.exists():
            raise ModelNotFoundError(f"model file not found: {spec}")
        if candidate.is_dir():
            raise ModelNotFoundError(f"{spec} is a directory, not a GGUF file")
        return ResolvedModel(candidate.resolve(), candidate.name)
    from_store = _resolve_in_store(spec, paths)
    if from_store is not None:
        return from_store
    if spec in STARTERS:
        return ResolvedModel(starter_path(spec, paths), spec, STARTERS[spec].sha256)
    from llcuda_tui.core.store._remote import pull_missing  # boto3 only with a team store

    pulled = pull_missing(spec, paths)
    if pulled is not None:
        return ResolvedModel(pulled[0], spec, pulled[1])
    raise ModelNotFoundError(
        f"no model named '{spec}' (not a file, not in the store; starter models: "
        f"{', '.join(STARTERS)})"
    )


def _resolve_in_store(name: str, paths: Paths) -> ResolvedModel | None:
    found = resolve_name(name, paths)
    if found is None:
        return None
    path, sha256 = found
    return ResolvedModel(Path(path), name, sha256)
