"""Models: the store's table and a detail pane (GGUF metadata, fit on this machine and on
each attached worker's free VRAM), the store's size cap (c edits it), the team store's models
that this store lacks (listed after the local ones; t pulls one), and Hugging Face (list a
repo's GGUFs, pull with progress, speed and ETA, cancel, resume).

Every store call runs in a thread worker; results come back as messages. The text this
screen shows and the work its threads do are in the package's other modules (``__init__``).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast

from textual import on, work
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, DataTable, Input, ProgressBar, Static
from textual.worker import Worker, WorkerState, get_current_worker

from llcuda_tui.core.errors import LlcudaError
from llcuda_tui.core.fmt import fmt_ago, fmt_size
from llcuda_tui.core.store import (
    FitBadge,
    ModelEntry,
    PullCancelled,
    PullJob,
    RemoteEntry,
    Store,
    TeamPullJob,
    set_max_size,
)
from llcuda_tui.messages import (
    HubFailed,
    HubListed,
    SettingsSaved,
    SizeCapFailed,
    StoreActionDone,
    StoreChanged,
    StoreFailed,
    StoreListed,
    TeamListed,
    WorkerFitsListed,
    WorkerModelsListed,
    WorkFailed,
)
from llcuda_tui.palette import PaletteBinding
from llcuda_tui.screens.dialogs import ConfirmDialog, TextPromptDialog
from llcuda_tui.screens.models.actions import (
    delete_question,
    deleted_text,
    imported_text,
    remove_model,
    verified_text,
)
from llcuda_tui.screens.models.detail import (
    ADOPTING,
    EMPTY_STORE,
    model_detail,
    team_detail,
    usage_text,
)
from llcuda_tui.screens.models.hub import file_state, list_with_partials, listed_text, pulled_text
from llcuda_tui.screens.models.listing import (
    fit_badges,
    fits_on_workers,
    models_on_workers,
    team_listing,
)
from llcuda_tui.widgets import KeyFooter

if TYPE_CHECKING:
    from llcuda_tui.app import LlcudaApp
    from llcuda_tui.core.worker import WorkerModels

PULL_POLL_S = 0.25


class ModelsScreen(Screen[None]):
    CSS_PATH = "models.tcss"
    # most used first: under 100 columns the footer keeps the first that fit (? lists all)
    BINDINGS: ClassVar[list[BindingType]] = [
        PaletteBinding(
            "escape", "cancel_pull", "Cancel pull",  # shown while a pull runs (check_action)
            title="Models: Cancel the pull", tooltip="Stop the download (pulling again resumes)",
        ),
        PaletteBinding(
            "delete", "delete_model", "Delete",
            title="Models: Delete model", tooltip="Remove the selected model (asks first)",
        ),
        PaletteBinding(
            "h", "focus_hub", "HF repo",
            title="Models: Hugging Face repo", tooltip="Type a repo id to list its GGUFs",
        ),
        PaletteBinding(
            "i", "import_file", "Import",
            title="Models: Import a GGUF file", tooltip="Hardlink a local file into the store",
        ),
        PaletteBinding(
            "p", "toggle_pin", "Pin/unpin",
            title="Models: Pin or unpin", tooltip="Pinned models are kept by gc and the cap",
        ),
        PaletteBinding(
            "v", "verify", "Verify",
            title="Models: Verify model", tooltip="Re-hash the selected model's files",
        ),
        PaletteBinding(
            "c", "edit_cap", "Size cap", show=False,  # named on the disk line
            title="Models: Store size cap", tooltip="Edit store.max_size (saved to config)",
        ),
        PaletteBinding(
            "r", "refresh", "Refresh", show=False,
            title="Models: Refresh", tooltip="List the store and ask the workers again",
        ),
        PaletteBinding(
            "t", "pull_team", "Pull from team", show=False,  # named in the detail
            title="Models: Pull from the team store", tooltip="Pull the selected team model",
        ),
        PaletteBinding(
            "w", "toggle_on_workers", "Load/unload on workers", show=False,  # named in the detail
            title="Models: Load or unload on the workers",
            tooltip="Load the selected model on each attached worker of many models (unload it "
            "where it is loaded)",
        ),
    ]  # fmt: skip

    def __init__(self) -> None:
        super().__init__()
        self.entries: dict[str, ModelEntry] = {}
        self.badges: dict[str, FitBadge] = {}
        self.worker_fits: dict[str, dict[str, FitBadge] | str] = {}
        """Per worker URL: {model name: FitBadge}, or why there is no estimate."""
        self.worker_models: dict[str, WorkerModels] = {}
        """Per worker URL: the models it serves and their states."""
        self.listing: Any = None
        self.pull_job: PullJob | None = None
        self.team: dict[str, RemoteEntry] = {}
        """The team store's models that this store lacks, by name (rows keyed ``team:NAME``)."""
        self.team_line = ""
        self.importing = ""
        """The path being imported (the dialog comes back with it if the import fails)."""

    @property
    def llcuda(self) -> LlcudaApp:
        return cast("LlcudaApp", self.app)

    def compose(self) -> ComposeResult:
        with Horizontal(id="models-top"):
            with Vertical(id="store-pane"):
                yield Static("Model store", classes="section-title")
                yield DataTable(id="store-table", cursor_type="row", zebra_stripes=True)
                yield Static("", id="du-line", classes="hint", markup=False)
                yield Static("", id="team-line", classes="hint", markup=False)
            with VerticalScroll(id="detail-pane"):
                yield Static("", id="detail", markup=False)
        with Vertical(id="hub-pane"):
            yield Static("Hugging Face", classes="section-title")
            with Horizontal(id="hub-bar"):
                yield Input(placeholder="owner/repo (a GGUF repository)", id="repo")
                yield Button("List files", id="list-files")
            yield DataTable(id="hub-table", cursor_type="row")
            yield ProgressBar(total=100, id="pull-progress")
            yield Static("", id="pull-status", classes="hint", markup=False)
        yield KeyFooter()

    def on_mount(self) -> None:
        self.query_one("#store-table", DataTable).add_columns(
            "name", "quant", "size", "last used", "pinned", "fit"
        )
        self.query_one("#hub-table", DataTable).add_columns(
            "quant", "size", "file", "shards", "state"
        )
        self.pull_timer = self.set_interval(PULL_POLL_S, self.pull_tick, pause=True)
        self.action_refresh()

    def store(self) -> Store:
        return Store.from_settings(self.llcuda.settings)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Esc (cancel) is in the footer while a pull runs only."""
        return self.pull_job is not None if action == "cancel_pull" else True

    # --- the store ------------------------------------------------------------------------------

    @on(StoreChanged)
    def action_refresh(self) -> None:
        self.list_store()

    @work(thread=True, exclusive=True, group="store-list", exit_on_error=False)
    def list_store(self) -> None:
        app = self.llcuda
        try:
            store = self.store()
            entries = store.entries() if store.exists() else []
            usage = store.du()
        except LlcudaError as exc:
            self.post_message(StoreFailed(str(exc)))
            return
        badges = fit_badges(entries, app.settings.engine, app.fit_device)
        if get_current_worker().is_cancelled:
            return  # a newer listing runs: this one read the store before a change
        self.post_message(StoreListed(entries, usage, badges))
        self.list_team({e.name for e in entries})
        urls = list(getattr(app, "worker_urls", []))
        if urls:
            fits = fits_on_workers(entries, urls, app.worker_access, app.settings.engine)
            self.post_message(WorkerFitsListed(fits))
            self.post_message(WorkerModelsListed(models_on_workers(app.worker_access, urls)))

    @on(WorkerModelsListed)
    def show_worker_models(self, message: WorkerModelsListed) -> None:
        self.worker_models = message.models
        if message.note:
            self.notify(message.note)
        self.show_detail(self.selected_name())

    def action_toggle_on_workers(self) -> None:
        name = self.selected_name()
        targets = {
            url: m.states[name] == "on_disk"
            for url, m in self.worker_models.items()
            if m.many and name is not None and m.states.get(name) in ("loaded", "on_disk")
        }
        if name is None or not targets:
            self.notify("no attached worker of many models serves this model", severity="warning")
            return
        self.toggle_on_workers(name, targets)

    @work(thread=True, exclusive=True, group="worker-models", exit_on_error=False)
    def toggle_on_workers(self, name: str, targets: dict[str, bool]) -> None:
        """Load (True) or unload ``name`` on each worker of ``targets``, then list again."""
        from llcuda_tui.core.worker import toggle_worker_model

        access = self.llcuda.worker_access
        notes = []
        for url, load in targets.items():
            try:
                state = toggle_worker_model(access, url, name, load)
                notes.append(f"{name} on {url}: {state.replace('_', ' ')}")
            except LlcudaError as exc:
                notes.append(f"{name} on {url}: {exc}")
        self.post_message(
            WorkerModelsListed(models_on_workers(access, list(targets)), "; ".join(notes))
        )

    def list_team(self, local: set[str]) -> None:
        """Post the team store's models missing here (in the listing thread)."""
        listed = team_listing(self.llcuda.settings, local)
        if listed is not None:
            self.post_message(listed)

    @on(TeamListed)
    def show_team(self, message: TeamListed) -> None:
        table = self.query_one("#store-table", DataTable)
        for name in list(self.team):
            key = f"team:{name}"
            if key in table.rows:
                table.remove_row(key)
        self.team = {e.name: e for e in message.entries if e.name not in self.entries}
        for e in self.team.values():
            table.add_row(
                e.name, e.quant or "?", fmt_size(e.size), "team store", "", "", key=f"team:{e.name}"
            )
        if message.error:
            self.team_line = f"team store: {message.error}"
        elif self.team:
            self.team_line = (
                f"team store {message.where}: {len(self.team)} more model(s), t pulls one"
            )
        else:
            self.team_line = f"team store {message.where}: nothing this store lacks"
        line = self.query_one("#team-line", Static)
        line.update(self.team_line)
        line.display = True
        self.show_detail(self.selected_name())

    @on(WorkerFitsListed)
    def show_worker_fits(self, message: WorkerFitsListed) -> None:
        self.worker_fits = message.fits
        self.show_detail(self.selected_name())

    @on(StoreListed)
    def show_store(self, message: StoreListed) -> None:
        self.entries = {e.name: e for e in message.entries}
        self.badges = message.badges
        table = self.query_one("#store-table", DataTable)
        current = self.selected_name()
        table.clear()
        now = self.llcuda.clock()
        for e in message.entries:
            badge = self.badges.get(e.name)
            table.add_row(
                e.name,
                e.manifest.quant or "?",
                fmt_size(e.manifest.size),
                fmt_ago(e.state.last_used, now),
                "pinned" if e.state.pinned else "",
                badge.short if badge else "?",
                key=e.name,
            )
        if current in self.entries:
            table.move_cursor(row=table.get_row_index(current))
        self.query_one("#du-line", Static).update(usage_text(message.usage))
        self.show_detail(self.selected_name())

    def selected_name(self) -> str | None:
        """The local model under the cursor (None on a team-store row)."""
        key = self.selected_key()
        return None if key is None or key.startswith("team:") else key

    def selected_team(self) -> str | None:
        """The team-store model under the cursor (None on a local row)."""
        key = self.selected_key()
        return key.removeprefix("team:") if key and key.startswith("team:") else None

    def selected_key(self) -> str | None:
        table = self.query_one("#store-table", DataTable)
        if table.row_count == 0:
            return None
        try:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        except LookupError:
            return None
        return str(key.value) if key.value is not None else None

    @on(DataTable.RowHighlighted, "#store-table")
    def row_highlighted(self) -> None:
        self.show_detail(self.selected_name())

    def show_detail(self, name: str | None) -> None:
        detail = self.query_one("#detail", Static)
        entry = self.entries.get(name) if name else None
        team = self.team.get(self.selected_team() or "")
        if entry is None and team is not None:
            detail.update(team_detail(team))
        elif entry is None and not self.entries and self.llcuda.adopting_starters:
            detail.update(ADOPTING)
        elif entry is None:
            detail.update(EMPTY_STORE if not self.entries else "")
        else:
            app = self.llcuda
            detail.update(
                model_detail(
                    entry,
                    self.badges.get(entry.name),
                    app.settings.engine,
                    app.clock(),
                    getattr(app, "worker_urls", []),
                    self.worker_fits,
                    self.worker_models,
                )
            )

    # --- the size cap ---------------------------------------------------------------------------

    def action_edit_cap(self) -> None:
        def chosen(text: str | None) -> None:
            if text is not None:
                self.save_cap(text)

        self.app.push_screen(
            TextPromptDialog(
                "Model store size cap (e.g. 50GB, 200GiB; empty = no cap)",
                value=self.llcuda.settings.store.max_size,
                placeholder="no cap",
            ),
            chosen,
        )

    @work(thread=True, exclusive=True, group="settings", exit_on_error=False)
    def save_cap(self, text: str) -> None:
        try:
            settings = set_max_size(self.llcuda.settings, text)
        except LlcudaError as exc:
            self.post_message(SizeCapFailed(str(exc)))
            return
        cap = settings.store.max_size or "no cap"
        where = settings.paths.config_file
        self.post_message(SettingsSaved(settings, f"store size cap: {cap} (saved to {where})"))

    @on(SettingsSaved)
    def settings_saved(self, message: SettingsSaved) -> None:
        self.llcuda.settings = message.settings
        self.query_one("#pull-status", Static).update(message.message)
        self.notify(message.message)
        self.list_store()

    def run_store_action(self, what: str, fn: Any, done_text: Any) -> None:
        self.store_action(what, fn, done_text)

    @work(thread=True, group="store-action", exit_on_error=False)
    def store_action(self, what: str, fn: Any, done_text: Any) -> None:
        try:
            result = fn()
        except LlcudaError as exc:
            self.post_message(StoreActionDone(what, str(exc), ok=False))
            return
        self.post_message(StoreActionDone(what, done_text(result)))

    @on(StoreActionDone)
    def store_action_done(self, message: StoreActionDone) -> None:
        if message.ok and message.what in ("delete", "import", "pull"):
            self.llcuda.store_changed(by=self)  # the Chat and Bench pickers relist
        self.notify(
            message.message,
            severity="information" if message.ok else "error",
            timeout=6 if message.ok else 10,
        )
        if message.what == "pull":
            self.end_pull(message.message)
            if self.listing is not None:
                self.list_hub(self.listing.repo, quiet=True)
        if message.what == "import" and not message.ok and self.importing:
            self.action_import_file(self.importing, message.message)  # the path, kept
        if message.what == "import":
            self.importing = ""
        self.list_store()

    def action_toggle_pin(self) -> None:
        name = self.selected_name()
        if name is None:
            return
        pinned = not self.entries[name].state.pinned
        self.run_store_action(
            "pin",
            lambda: self.store().set_pinned(name, pinned),
            lambda e: f"{e.name} {'pinned' if pinned else 'unpinned'}",
        )

    def action_verify(self) -> None:
        name = self.selected_name()
        if name is None:
            return
        self.query_one("#pull-status", Static).update(f"verifying {name} (re-hashing)…")

        self.run_store_action(
            "verify", lambda: self.store().verify(name), lambda r: verified_text(name, r)
        )

    def action_delete_model(self) -> None:
        name = self.selected_name()
        if name is None:
            return

        entry = self.entries[name]
        pinned = entry.state.pinned

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.run_store_action(
                    "delete",
                    lambda: remove_model(self.store(), name, pinned),
                    lambda r: deleted_text(name, r),
                )

        question, yes = delete_question(entry)
        self.app.push_screen(ConfirmDialog(question, yes=yes, destructive=True), confirmed)

    def action_import_file(self, typed: str = "", error: str = "") -> None:
        """Ask for a file to import (again with ``typed`` and ``error`` after a failure)."""

        def chosen(path: str | None) -> None:
            if not path:
                return
            target = Path(path).expanduser()
            evicted: list[str] = []  # filled on the worker thread, read once it is done

            self.importing = path
            self.run_store_action(
                "import",
                lambda: self.store().import_path(target, on_evict=evicted.append),
                lambda e: imported_text(e, evicted),
            )

        from llcuda_tui.screens.import_dialog import ImportDialog  # on first use

        self.app.push_screen(ImportDialog(typed, error), chosen)

    # --- Hugging Face ---------------------------------------------------------------------------

    def action_focus_hub(self) -> None:
        self.query_one("#repo", Input).focus()

    @on(Input.Submitted, "#repo")
    @on(Button.Pressed, "#list-files")
    def list_files(self) -> None:
        repo = self.query_one("#repo", Input).value.strip()
        if not repo:
            self.notify("type a repo id (owner/name)", severity="warning")
            return
        self.query_one("#pull-status", Static).update(f"listing {repo}…")
        self.list_hub(repo)

    @work(thread=True, exclusive=True, group="hub", exit_on_error=False)
    def list_hub(self, repo: str, quiet: bool = False) -> None:
        try:
            listing, resumable = list_with_partials(repo, self.store())
        except LlcudaError as exc:
            self.post_message(HubFailed(str(exc)))
            return
        self.post_message(HubListed(listing, resumable, quiet))

    @on(HubListed)
    def show_hub(self, message: HubListed) -> None:
        self.listing = listing = message.listing
        table = self.query_one("#hub-table", DataTable)
        table.clear()
        for m in listing.models:
            state = file_state(listing, m, self.entries, message.resumable)
            table.add_row(
                m.quant, fmt_size(m.size), m.first.path, str(len(m.files)), state, key=m.first.path
            )
        n = len(listing.models)
        if message.quiet:
            return
        self.query_one("#pull-status", Static).update(listed_text(listing))
        if n:
            table.focus()

    @on(DataTable.RowSelected, "#hub-table")
    def hub_row_selected(self, event: DataTable.RowSelected) -> None:
        if self.listing is None or self.pull_job is not None:
            if self.pull_job is not None:
                self.notify("a pull is running (Esc cancels it)", severity="warning")
            return
        path = str(event.row_key.value)
        self.pull_job = job = PullJob(self.store(), self.listing.repo, path, threading.Event())
        self.start_pull(job, f"pulling {path}…")

    def action_pull_team(self) -> None:
        name = self.selected_team()
        if name is None:
            self.notify("pick a model marked 'team store' to pull it", severity="warning")
            return
        if self.pull_job is not None:
            self.notify("a pull is running (Esc cancels it)", severity="warning")
            return
        from llcuda_tui.core.store import RemoteStore

        remote = RemoteStore.from_settings(self.llcuda.settings)
        self.pull_job = job = TeamPullJob(self.store(), remote, name, threading.Event())
        self.start_pull(job, f"pulling {name} from the team store…")

    def start_pull(self, job: PullJob, status: str) -> None:
        bar = self.query_one("#pull-progress", ProgressBar)
        bar.update(total=None, progress=0)
        bar.add_class("-visible")
        self.query_one("#pull-status", Static).update(status)
        self.pull_timer.resume()
        self.refresh_bindings()  # Esc cancels: the footer says so
        self.run_pull(job)

    @work(thread=True, group="pull", exit_on_error=False)
    def run_pull(self, job: PullJob) -> None:
        started = time.monotonic()
        try:
            result = job.run()
        except PullCancelled as exc:
            self.post_message(StoreActionDone("pull", str(exc), ok=False))
            return
        except LlcudaError as exc:
            self.post_message(StoreActionDone("pull", f"pull failed: {exc}", ok=False))
            return
        seconds = time.monotonic() - started
        self.post_message(StoreActionDone("pull", pulled_text(result, seconds)))

    def pull_tick(self) -> None:
        job = self.pull_job
        if job is None:
            return
        p = job.progress
        if p.total:
            self.query_one("#pull-progress", ProgressBar).update(total=p.total, progress=p.done)
        status = p.describe() if p.total else (p.status or "starting…")
        self.query_one("#pull-status", Static).update(f"{job.file}: {status} (Esc cancels)")

    def action_cancel_pull(self) -> None:
        if self.pull_job is not None:
            self.pull_job.cancel_event.set()  # the pull stops at its next chunk
            self.query_one("#pull-status", Static).update("cancelling…")

    def end_pull(self, text: str) -> None:
        self.pull_job = None
        self.refresh_bindings()
        self.pull_timer.pause()
        self.query_one("#pull-progress", ProgressBar).remove_class("-visible")
        self.query_one("#pull-status", Static).update(text)

    @on(WorkFailed)
    def work_failed(self, message: WorkFailed) -> None:
        message.stop()
        self.query_one("#pull-status", Static).update(f"{message.what}: {message.error}")
        self.notify(message.error, severity="error", timeout=10)

    @on(Worker.StateChanged)
    def worker_failed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR:
            error = event.worker.error
            if event.worker.group == "pull":
                self.end_pull(f"pull failed: {type(error).__name__}: {error}")
            self.notify(f"{type(error).__name__}: {error}", severity="error", timeout=10)
