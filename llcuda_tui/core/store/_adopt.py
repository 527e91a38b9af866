"""The Hugging Face cache into the store: ``llcuda models adopt --hf-cache`` hardlinks the
GGUFs that huggingface_hub downloaded, each verified by its hash, so nothing is copied."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

from llcuda_tui.core.errors import UserInputError
from llcuda_tui.core.store import _fs as storefs
from llcuda_tui.core.store import _hub as hub
from llcuda_tui.core.store._base import StoreBase
from llcuda_tui.core.store._errors import IntegrityError, StoreError
from llcuda_tui.core.store._fs import Progress
from llcuda_tui.core.store._hub import RemoteFile, RemoteModel
from llcuda_tui.core.store._layout import check_name
from llcuda_tui.core.store._manifest import HfSource, ManifestFile
from llcuda_tui.core.store._pull import up_to_date


def hf_cache_dir() -> Path:
    """Where huggingface_hub keeps its cache (HF_HUB_CACHE, HF_HOME/hub, ~/.cache/...)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface"
    )
    return Path(home).expanduser() / "hub"


def adopt_hf_cache(
    store: StoreBase,
    cache_dir: Path | None = None,
    dry_run: bool = False,
    on_progress: Progress | None = None,
) -> list[dict[str, Any]]:
    """Hardlink the GGUFs of the HF cache into the store, each verified by its hash.

    One JSON-ready row per model found: ``name``, ``commit``, ``size`` and ``status``
    ('adopted', 'already in the store', 'would adopt', 'skipped: why').
    """
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    cache = Path(cache_dir) if cache_dir else hf_cache_dir()
    if cache.exists() and not cache.is_dir():
        raise UserInputError(f"--hf-cache {cache} is not a directory")
    try:
        info = scan_cache_dir(cache)
    except CacheNotFound:
        raise UserInputError(f"no Hugging Face cache at {cache}") from None
    store.ensure()
    results = []
    for repo in sorted(info.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        # a revision a ref (main) points at comes last, so its files win the name
        for rev in sorted(repo.revisions, key=lambda r: (bool(r.refs), r.last_modified)):
            for model, blobs in _cached_models(rev):
                results.append(
                    _adopt_one(store, repo.repo_id, rev, model, blobs, dry_run, on_progress)
                )
    return results


def _cached_models(rev: Any) -> list[tuple[RemoteModel, dict[str, Path]]]:
    files, blobs = [], {}
    for cf in rev.files:
        rel = Path(cf.file_path).relative_to(rev.snapshot_path).as_posix()
        if not rel.lower().endswith(".gguf"):
            continue
        try:
            hub.check_remote_path(rel)
        except UserInputError:
            continue
        blob_name = Path(cf.blob_path).name
        sha = blob_name if re.fullmatch(r"[0-9a-f]{64}", blob_name) else None
        git = blob_name if sha is None and re.fullmatch(r"[0-9a-f]{40}", blob_name) else None
        files.append(RemoteFile(rel, int(cf.size_on_disk), sha, git))
        blobs[rel] = Path(cf.blob_path)
    return [(m, blobs) for m in hub.group_models(files)]


def _adopt_one(
    store: StoreBase,
    repo_id: str,
    rev: Any,
    model: RemoteModel,
    blobs: dict[str, Path],
    dry_run: bool,
    on_progress: Progress | None,
) -> dict[str, Any]:
    name = f"{repo_id}:{model.quant}"
    result: dict[str, Any] = {"name": name, "commit": rev.commit_hash, "size": model.size}
    existing = store.lookup(name)
    if not model.complete:
        return result | {"status": "skipped: shards are missing from the cache"}
    if existing and up_to_date(store, existing, rev.commit_hash, model):
        return result | {"status": "already in the store"}
    if any(blobs[f.path].stat().st_dev != store.layout.blobs.stat().st_dev for f in model.files):
        return result | {"status": "skipped: on another filesystem (llcuda models import copies)"}
    if dry_run:
        return result | {"status": "would adopt"}
    try:
        check_name(name)
        files = []
        for i, f in enumerate(model.files):
            if f.git_oid:
                _check_git_oid(blobs[f.path], f)
            sha = store.ingest_file(blobs[f.path], on_progress, expect=f.sha256, link_only=True)
            files.append(ManifestFile("model" if i == 0 else "shard", f.path, sha, f.size))
        refs = sorted(rev.refs)
        source = HfSource(
            repo_id,
            rev.commit_hash,
            revision=refs[0] if refs else rev.commit_hash,
            adopted_from="hf-cache",
        )
        store.publish(store.build_manifest(source, files), [name])
    except (IntegrityError, StoreError, UserInputError) as exc:
        return result | {"status": f"skipped: {exc}"}
    return result | {"status": "adopted"}


def _check_git_oid(path: Path, f: RemoteFile) -> None:
    h = storefs.hash_file(path, hasher=hashlib.sha1(f"blob {f.size}\0".encode()))
    if h.hexdigest() != f.git_oid:
        raise IntegrityError(f"{f.path} in the HF cache does not match its git id")
