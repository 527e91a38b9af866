"""One pull run off the UI thread (from the Hub, or from the team store): progress to poll,
and a cancel that keeps the partial file for the next pull to resume."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from llcuda_tui.core.store._progress import TransferProgress
from llcuda_tui.core.store._records import PullResult
from llcuda_tui.core.store._store import Store

if TYPE_CHECKING:  # the team store (boto3) loads only when a team pull runs
    from llcuda_tui.core.store._remote import RemoteStore


class PullJob:
    """One Hub pull: ``run()`` blocks (call it off the UI thread); poll ``progress``;
    setting ``cancel_event`` (or ``cancel()``) from anywhere stops it at the next chunk with
    :class:`PullCancelled`, keeping the partial file for a resume."""

    def __init__(
        self, store: Store, repo: str, file: str, cancel_event: threading.Event | None = None
    ) -> None:
        self.store = store
        self.repo = repo
        self.file = file
        self.progress = TransferProgress()
        self.cancel_event = cancel_event or threading.Event()

    def cancel(self) -> None:
        self.cancel_event.set()

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    def _on_progress(self, done: int, total: int) -> None:
        self.progress.update(done, total)

    def _on_status(self, message: str) -> None:
        self.progress.status = message

    def run(self) -> PullResult:
        """The store's PullResult; PullCancelled when cancelled."""
        return self.store.pull(
            self.repo,
            file=self.file,
            on_progress=self._on_progress,
            on_status=self._on_status,
            cancel=self.cancel_event,
        )


class TeamPullJob(PullJob):
    """One pull of the model ``name`` from the team store into ``store``: the same progress,
    cancel and resume as a Hub pull (each blob verified before it is published)."""

    def __init__(
        self,
        store: Store,
        remote: RemoteStore,
        name: str,
        cancel_event: threading.Event | None = None,
    ) -> None:
        super().__init__(store, remote.where, name, cancel_event)
        self.remote = remote

    def run(self) -> PullResult:
        return self.remote.pull(
            self.store,
            self.file,
            on_progress=self._on_progress,
            on_status=self._on_status,
            cancel=self.cancel_event,
        )
