"""The Models screen's store actions apart from their keys and dialogs: what delete does
in its thread (a pinned model is unpinned first, and pinned again if the delete fails),
the question it asks, and what delete, verify and import say when done."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from llcuda_tui.core.errors import LlcudaError
from llcuda_tui.core.fmt import fmt_size

if TYPE_CHECKING:
    from llcuda_tui.core.store import ModelEntry, Store


def remove_model(store: Store, name: str, pinned: bool) -> Any:
    """Delete ``name`` from ``store``; the store's report (``freed_bytes``)."""
    if not pinned:
        return store.remove(name)
    store.set_pinned(name, False)  # the store refuses a pinned model
    try:
        return store.remove(name)
    except LlcudaError:
        store.set_pinned(name, True)  # as it was: nothing half-done
        raise


def delete_question(entry: ModelEntry) -> tuple[str, str]:
    """The confirm dialog's question and its yes button for deleting ``entry``."""
    pinned = entry.state.pinned
    question = f"Delete {entry.name} ({fmt_size(entry.manifest.size)}) from the store?"
    if pinned:
        question += (
            "\n\nIt is pinned: you marked it to keep (gc and the size cap never evict "
            "it). Deleting unpins it first."
        )
    return question, "Unpin and delete" if pinned else "Delete"


def deleted_text(name: str, report: Any) -> str:
    return f"deleted {name}, freed {fmt_size(report.freed_bytes)}"


def verified_text(name: str, report: Any) -> str:
    state = "ok" if report.ok else "; ".join(report.problems)
    return f"verified {name}: {report.checked_files} file(s), {state}"


def imported_text(entry: ModelEntry, evicted: Sequence[str]) -> str:
    """``evicted``: the models the import pushed out under ``store.max_size``."""
    gone = f"; evicted {', '.join(evicted)} (store.max_size)" if evicted else ""
    return f"imported {entry.name} ({fmt_size(entry.manifest.size)}){gone}"
