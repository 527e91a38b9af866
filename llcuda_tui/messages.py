"""Messages that workers post to screens (``post_message`` is thread-safe and never blocks).

Workers do the slow work off the UI thread and report here; the ``@on`` handlers of the
screens own every state change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.message import Message


@dataclass
class ModelLoaded(Message):
    """The chat engine finished loading."""

    engine: Any
    choice: Any
    sha256: str | None


@dataclass
class WorkFailed(Message):
    """A worker failed with a message fit for the user."""

    what: str
    """What was being done ('load', 'count', 'pull', ...)."""
    error: str


@dataclass
class ChoicesReady(Message):
    """The pickable models (and their fit badges) were listed."""

    choices: list[Any]
    badges: dict[str, Any]


@dataclass
class ContextPlanned(Message):
    """Tokens were counted for the context meter (``send``: for a turn about to go out)."""

    plan: Any
    """The ContextPlan; None when the engine cannot count (``note`` says why)."""
    turns: list[dict[str, str]]
    send: bool = False
    note: str = ""


@dataclass
class StoreListed(Message):
    """The model store was read: entries, disk usage, fit of each entry."""

    entries: list[Any]
    usage: dict[str, Any]
    badges: dict[str, Any]


@dataclass
class StoreActionDone(Message):
    """A store action (pin, delete, import, verify, pull) finished."""

    what: str
    message: str
    ok: bool = True


@dataclass
class HubListed(Message):
    """A Hub repo's GGUF files were listed."""

    listing: Any
    resumable: dict[str, int]
    quiet: bool = False
    """A refresh after a pull: keep the pull's outcome in the status line."""


@dataclass
class BenchDone(Message):
    """A benchmark finished (``run`` is the StoredRun) or failed (``error``)."""

    run: Any = None
    error: str | None = None


@dataclass
class WorkerGpuPolled(Message):
    """One poll of the attached workers' GPUs: a WorkerGpu per worker (reachable or not)."""

    results: list[Any]


@dataclass
class SettingsSaved(Message):
    """The settings file was updated; ``settings`` are the new Settings."""

    settings: Any
    message: str


@dataclass
class WorkerFitsListed(Message):
    """Fit badges against each attached worker's free VRAM: url -> {model name: FitBadge},
    or url -> a line saying why there is no estimate (worker down, no GPU)."""

    fits: dict[str, Any]
