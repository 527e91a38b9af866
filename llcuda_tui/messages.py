"""Messages that workers post to screens (``post_message`` is thread-safe and never blocks).

Workers do the slow work off the UI thread and report here; the ``@on`` handlers of the
screens own every state change. A failure is a message class of its own (a
:class:`WorkFailed` subclass), so a handler picks the failures it handles by type:
``@on(LoadFailed)`` for one kind, ``@on(WorkFailed)`` for all of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from textual.message import Message

if TYPE_CHECKING:
    from llcuda_tui.core.bench import SpecModeResult, StoredRun
    from llcuda_tui.core.chat import ContextPlan
    from llcuda_tui.core.config import Settings
    from llcuda_tui.core.engine import EngineProtocol
    from llcuda_tui.core.store import FitBadge, ModelChoice, ModelEntry, RemoteEntry, RepoListing
    from llcuda_tui.core.worker import WorkerGpu, WorkerModels


@dataclass
class ModelLoaded(Message):
    """The chat engine finished loading (or a worker was attached)."""

    engine: EngineProtocol
    choice: ModelChoice
    sha256: str | None


# --- failures: one class per kind of work --------------------------------------------------------


@dataclass
class WorkFailed(Message):
    """A worker failed with a message fit for the user (handle a subclass, or all)."""

    error: str
    what: ClassVar[str] = "work"
    """What was being done, in a word or two (for a status line)."""


class ModelsListFailed(WorkFailed):
    """The pickable models could not be listed."""

    what = "models"


class LoadFailed(WorkFailed):
    """The chat model did not load."""

    what = "load"


class CountFailed(WorkFailed):
    """Counting tokens for the context meter failed."""

    what = "count"


class SendFailed(WorkFailed):
    """Counting a turn about to go out failed: it was not sent."""

    what = "send"


class AttachFailed(WorkFailed):
    """A worker could not be attached."""

    what = "attach"


class StoreFailed(WorkFailed):
    """The model store could not be read."""

    what = "store"


class HubFailed(WorkFailed):
    """A Hub repo could not be listed."""

    what = "hub"


class SizeCapFailed(WorkFailed):
    """The store's size cap could not be saved."""

    what = "size cap"


class ThemeSaveFailed(WorkFailed):
    """The theme chosen in the palette could not be written to the config file."""

    what = "theme"


class SpecSaveFailed(WorkFailed):
    """The Chat screen's speculative decoding choice could not be written to the config."""

    what = "load settings"


# --- results -------------------------------------------------------------------------------------


@dataclass
class ChoicesReady(Message):
    """The pickable models (and their fit badges, by name) were listed."""

    choices: list[ModelChoice]
    badges: dict[str, FitBadge]
    listing: int = 0
    """Which listing this answers: a screen shows only its latest. A newer listing cancels
    the older one's thread worker, but a thread cannot be stopped: it still posts, possibly
    after the newer one (on a busy machine), and its choices lack what changed since (a
    worker attached meanwhile, a model imported or deleted)."""


@dataclass
class ContextPlanned(Message):
    """Tokens were counted for the context meter (``send``: for a turn about to go out)."""

    plan: ContextPlan | None
    """None when the engine cannot count (``note`` says why)."""
    turns: list[dict[str, str]]
    send: bool = False
    note: str = ""


@dataclass
class StoreListed(Message):
    """The model store was read: entries, disk usage, fit of each entry."""

    entries: list[ModelEntry]
    usage: dict[str, object]
    """What ``Store.du`` reports."""
    badges: dict[str, FitBadge]


@dataclass
class TeamListed(Message):
    """The team store was read: its models that this store lacks, or why it could not be."""

    entries: list[RemoteEntry]
    where: str
    error: str = ""


@dataclass
class StoreActionDone(Message):
    """A store action (pin, delete, import, verify, pull) finished."""

    what: str
    message: str
    ok: bool = True


@dataclass
class HubListed(Message):
    """A Hub repo's GGUF files were listed."""

    listing: RepoListing
    resumable: dict[str, int]
    quiet: bool = False
    """A refresh after a pull: keep the pull's outcome in the status line."""


@dataclass
class BenchDone(Message):
    """A benchmark finished (``run`` is the StoredRun; a speculative one: ``spec``, a result
    per mode, not stored) or failed (``error``)."""

    run: StoredRun | None = None
    error: str | None = None
    spec: list[SpecModeResult] | None = None


@dataclass
class WorkerGpuPolled(Message):
    """One poll of the attached workers' GPUs: a WorkerGpu per worker (reachable or not)."""

    results: list[WorkerGpu]


@dataclass
class SettingsSaved(Message):
    """The settings file was updated; ``settings`` are the new Settings."""

    settings: Settings
    message: str


@dataclass
class BenchSized(Message):
    """Where a local benchmark would run (a GPU or the CPU), to size its defaults."""

    on_gpu: bool


@dataclass
class SpeedsFound(Message):
    """A model's measured t/s from its last benchmark here ({'pp': ..., 'tg': ...}; empty:
    never benchmarked), for the run-time estimate."""

    model: str
    speeds: dict[str, float]


@dataclass
class WorkerChoicesListed(Message):
    """A worker of many models listed what it serves: one choice per model (``url``)."""

    url: str
    choices: list[ModelChoice]


class StoreChanged(Message):
    """The model store changed outside the screen (the starter models were added at a first
    run): a screen that lists models lists them again."""


@dataclass
class StartersAdopted(Message):
    """The starter models became store entries (``names``; empty: none installed)."""

    names: list[str]


class StartersFailed(WorkFailed):
    """The starter models could not be made store entries (the next run tries again)."""

    what = "starter models"


@dataclass
class ThemeSaved(Message):
    """The theme was written to the config file (``[tui] theme``)."""

    theme: str


@dataclass
class WorkerFitsListed(Message):
    """Fit badges against each attached worker's free VRAM: url -> {model name: FitBadge},
    or url -> a line saying why there is no estimate (worker down, no GPU)."""

    fits: dict[str, dict[str, FitBadge] | str]


@dataclass
class WorkerModelsListed(Message):
    """What each attached worker serves now (url -> ``WorkerModels``); ``note``: the outcome
    of a load or unload asked on the workers (shown as a notification)."""

    models: dict[str, WorkerModels]
    note: str = ""
