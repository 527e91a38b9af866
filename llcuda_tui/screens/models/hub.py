"""The Models screen's Hugging Face pane as data: a repo's listing with what of it is
already here (``list_with_partials``, blocking: in a thread), each file's state in the
table, the pane's status line and what a finished pull says."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llcuda_tui.core.fmt import fmt_size
from llcuda_tui.core.store import list_repo

if TYPE_CHECKING:
    from collections.abc import Container, Mapping

    from llcuda_tui.core.store import PullResult, RemoteModel, RepoListing, Store


def list_with_partials(repo: str, store: Store) -> tuple[RepoListing, dict[str, int]]:
    """``repo``'s GGUF models and, by first file, the bytes of a resumable download."""
    listing = list_repo(repo)
    resumable = (
        {
            m.first.path: store.partial_bytes(listing.repo, listing.commit, m.first)
            for m in listing.models
        }
        if store.exists()
        else {}
    )
    return listing, resumable


def file_state(
    listing: RepoListing, m: RemoteModel, stored: Container[str], resumable: Mapping[str, int]
) -> str:
    """The ``state`` cell: in the store, resumable (with its bytes), incomplete or empty."""
    if not m.complete:
        return "incomplete"
    if f"{listing.repo}:{m.quant}" in stored:
        return "in store"
    partial = resumable.get(m.first.path, 0)
    return f"resumable ({fmt_size(partial)})" if partial else ""


def listed_text(listing: RepoListing) -> str:
    n = len(listing.models)
    return (
        f"{listing.repo} @ {listing.commit[:12]}: {n} GGUF model(s); Enter pulls one"
        if n
        else f"{listing.repo} has no GGUF files"
    )


def pulled_text(result: PullResult, seconds: float) -> str:
    e = result.entry
    how = (
        "already in the store"
        if result.up_to_date
        else (f"{fmt_size(result.downloaded_bytes)} in {seconds:.1f} s")
    )
    return f"pulled {e.name} ({how})"
