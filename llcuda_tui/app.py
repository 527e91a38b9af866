"""The Textual app: four screens (modes) over shared services injected at construction.

The app owns what the screens share: the settings, the conversation store, the GPU sampler
(one thread, sampling every second; screens read its ring buffers), and the loaded chat
engine. F1-F4 and the command palette (Ctrl+P) switch screens; the palette offers what the
app's and the current screen's ``BINDINGS`` give a title (``llcuda_tui.palette``), and ``?``
shows every screen's keys (``llcuda_tui.screens.help``, built from the same lists). Under 100
columns the screens carry the ``-narrow`` class (their stylesheets fit 80x24 with it).
"""

from __future__ import annotations

import contextlib
import importlib
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, ClassVar

from textual import on, work
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.timer import Timer
from textual.worker import get_current_worker

from llcuda_tui.core.config import Settings
from llcuda_tui.core.conversations import ConversationStore
from llcuda_tui.core.errors import LlcudaError
from llcuda_tui.core.gpu import GpuSampler
from llcuda_tui.core.worker import check_worker_url
from llcuda_tui.messages import (
    AttachFailed,
    LoadFailed,
    ModelLoaded,
    StartersAdopted,
    StartersFailed,
    StoreChanged,
    ThemeSaved,
    ThemeSaveFailed,
    WorkerChoicesListed,
    WorkFailed,
)
from llcuda_tui.palette import PaletteBinding, palette_commands
from llcuda_tui.screens.dialogs import TextPromptDialog

if TYPE_CHECKING:
    from llcuda_tui.core.engine import EngineProtocol
    from llcuda_tui.core.fit import DeviceMemory
    from llcuda_tui.core.store import ModelChoice
    from llcuda_tui.core.worker import WorkerAccess
    from llcuda_tui.screens.chat import ChatScreen

GPU_INTERVAL_S = 1.0
THEME_SAVE_DELAY_S = 0.5
"""A theme is written to the config file once it has stayed this long: the palette's theme
list can change the theme as it is browsed, and only the last one chosen is remembered."""
WORKER_LOAD_WAIT_S = 600.0
"""How long attaching waits for a worker that answers but is still loading its model."""


def _on_first_switch(module: str, name: str) -> Callable[[], Screen]:
    """A ``MODES`` entry that imports its screen's module when the mode is first shown: the
    TUI is ready after importing its first screen alone (the Benchmark screen's took 58 ms)."""

    def make() -> Screen:
        screen_type: type[Screen] = getattr(importlib.import_module(module), name)
        return screen_type()

    return make


class LlcudaApp(App[int]):
    """``LlcudaApp(settings=Settings.load())``; every service can be injected for tests."""

    CSS_PATH = "app.tcss"
    TITLE = "llcuda"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (100, "-wide")]  # noqa: RUF012 (App's own type)
    """Screens under 100 columns get ``-narrow`` (80x24 must stay usable: every stylesheet
    fits it with that class)."""
    MODES: ClassVar[dict[str, str | Callable[[], Screen]]] = {
        "chat": _on_first_switch("llcuda_tui.screens.chat", "ChatScreen"),
        "models": _on_first_switch("llcuda_tui.screens.models", "ModelsScreen"),
        "gpu": _on_first_switch("llcuda_tui.screens.gpu", "GpuScreen"),
        "bench": _on_first_switch("llcuda_tui.screens.bench", "BenchScreen"),
    }
    BINDINGS: ClassVar[list[BindingType]] = [
        PaletteBinding(
            "f1", "show_screen('chat')", "Chat",
            title="Chat screen", tooltip="Switch to the Chat screen",
        ),
        PaletteBinding(
            "f2", "show_screen('models')", "Models",
            title="Models screen", tooltip="Switch to the Models screen",
        ),
        PaletteBinding(
            "f3", "show_screen('gpu')", "GPU",
            title="GPU screen", tooltip="Switch to the GPU screen",
        ),
        PaletteBinding(
            "f4", "show_screen('bench')", "Bench",
            title="Benchmark screen", tooltip="Switch to the Benchmark screen",
        ),
        PaletteBinding(
            "f5", "attach_worker", "Attach worker", show=False,
            title="Attach worker", tooltip="Use a remote llcuda worker (llcuda serve) by URL",
        ),
        # not a priority binding: in a text field ? is typed (Tab leaves the field first)
        PaletteBinding(
            "question_mark", "help", "Keys", key_display="?",
            title="Keys", tooltip="The keys of every screen",
        ),
        Binding("ctrl+q", "quit", "Quit", show=False, priority=True, tooltip="Close llcuda"),
    ]  # fmt: skip

    def __init__(
        self,
        settings: Settings,
        *,
        workers: Sequence[str] = (),
        worker_access: WorkerAccess | None = None,
        gpu_sampler: GpuSampler | None = None,
        gpu_live: bool = True,
        fit_device: DeviceMemory | None = None,
        engine: EngineProtocol | None = None,
        engine_choice: ModelChoice | None = None,
        autoload: bool = True,
        adopt_starters: bool = True,
        clock: Callable[[], float] = time.time,
        start_screen: str = "chat",
    ) -> None:
        # the first screen is the start mode's, made when the app composes: switching to it
        # from Textual's blank default screen on mount styled the whole screen twice (each
        # switch to a new mode posts two ScreenResume events), ~0.1 s of a 2-core VM
        self.DEFAULT_MODE = start_screen  # type: ignore[misc]  # read by App.__init__
        super().__init__()
        self.settings = settings
        self.worker_urls = list(workers)
        from llcuda_tui.core.worker import WorkerAccess

        self.worker_access: WorkerAccess = worker_access or WorkerAccess()
        """The API key and TLS check for every attached worker (``llcuda tui --api-key-file``)."""
        self.remote_choices: dict[str, list[ModelChoice]] = {}
        """The model picker's entries for each worker that has answered, by URL: its one
        model, or each model of a worker of many models."""
        self.gpu_sampler = gpu_sampler or GpuSampler(GPU_INTERVAL_S, pcie=False)
        self.gpu_live = gpu_live
        self.fit_device = fit_device
        """Device memory for fit badges (None: detect this machine's)."""
        self.engine: EngineProtocol | None = engine
        """The chat engine (local, an engine process or a worker's); None before a load."""
        self.engine_choice: ModelChoice | None = engine_choice
        """The model picker's entry that ``engine`` was loaded from."""
        self._owns_engine = engine is None
        self._lease = contextlib.ExitStack()
        """The store lease on the loaded model (rm refuses, gc and the cap skip it)."""
        self.autoload = autoload
        self.adopting_starters = adopt_starters
        """True until the first run's starter models are store entries (or that failed)."""
        self.clock = clock
        self.start_screen = start_screen
        self.energy_baseline_mj: dict[int, int] = {}
        self.conversations = ConversationStore.open(settings.paths, clock=clock)
        self.chat_screen: ChatScreen | None = None
        """The Chat screen once it exists (workers' engines are handed to it)."""
        self.store_generation = 0
        """Counts the store's changes made here (import, delete, pull): a screen with a model
        picker relists when it is shown again and the count moved (one store, one list)."""
        self.saved_theme = settings.tui.theme or self.theme
        """The theme the config file has (or the default while it has none): a change to
        another one is written there (``[tui] theme``)."""
        self._theme_timer: Timer | None = None

    def on_load(self) -> None:
        self.restore_theme()  # before the first screen is styled (else styled again)

    def on_mount(self) -> None:
        if self.adopting_starters:
            self.adopt_starters(self.settings)
        if self.gpu_live:
            self.gpu_sampler.start()
        if self.conversations.notice:
            self.notify(self.conversations.notice, severity="warning", timeout=15)
        if self.worker_urls:
            self.autoload = False
            self.connect_worker(self.worker_urls[0])

    def on_unmount(self) -> None:
        self.gpu_sampler.close()
        if self.engine is not None and self._owns_engine:
            self.engine.close()
        self._lease.close()
        self.conversations.close()

    # --- theme --------------------------------------------------------------------------------

    def restore_theme(self) -> None:
        """The theme of the last run (``[tui] theme``), if this Textual has it."""
        wanted = self.settings.tui.theme
        if not wanted:
            return
        if wanted not in self.available_themes:
            self.saved_theme = self.theme
            self.notify(
                f"theme '{wanted}' ({self.settings.paths.config_file}) is unknown here: "
                f"using {self.theme}",
                severity="warning",
            )
            return
        self.theme = wanted

    def watch_theme(self, theme: str) -> None:
        if self._theme_timer is not None:
            self._theme_timer.stop()
            self._theme_timer = None
        if theme != self.saved_theme and self.is_running:
            self._theme_timer = self.set_timer(THEME_SAVE_DELAY_S, self.remember_theme)

    def remember_theme(self) -> None:
        self._theme_timer = None
        if self.theme != self.saved_theme:
            self.save_theme(self.settings, self.theme)

    @work(thread=True, exclusive=True, group="save-theme", exit_on_error=False)
    def save_theme(self, settings: Settings, theme: str) -> None:
        from llcuda_tui.core.config import save_setting

        try:
            save_setting(settings, "tui", "theme", theme)
        except LlcudaError as exc:
            self.post_message(ThemeSaveFailed(f"theme not remembered: {exc}"))
            return
        self.post_message(ThemeSaved(theme))

    @on(ThemeSaved)
    def theme_saved(self, message: ThemeSaved) -> None:
        from dataclasses import replace

        # only [tui] changes here: another screen may have saved other settings meanwhile
        self.settings = replace(self.settings, tui=replace(self.settings.tui, theme=message.theme))
        self.saved_theme = message.theme

    # --- the store -----------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="starters", exit_on_error=False)
    def adopt_starters(self, settings: Settings) -> None:
        """First run: the starter models become store entries (hardlinked), so the Models
        screen lists what the Chat and Bench pickers offer (one store, one list)."""
        from llcuda_tui.core.store import Store

        try:
            entries = Store.from_settings(settings).adopt_starters_once()
        except LlcudaError as exc:
            self.post_message(StartersFailed(f"starter models not added to the store: {exc}"))
            return
        self.post_message(StartersAdopted([e.name for e in entries or []]))

    @on(StartersAdopted)
    @on(StartersFailed)
    def starters_done(self, message: StartersAdopted | StartersFailed) -> None:
        self.adopting_starters = False
        if isinstance(message, StartersAdopted) and message.names:
            self.store_changed()
        else:
            self.screen.post_message(StoreChanged())  # it may have listed before the check

    def store_changed(self, by: Screen | None = None) -> None:
        """The store changed here (``by`` that screen, which relists itself): the screen
        shown now relists at once, the others when they are shown again. An import started
        on F2 can end while Chat is shown: Chat had resumed before the change, so it stayed
        stale until the next F2 and F1."""
        self.store_generation += 1
        if self.screen is not by:
            self.screen.post_message(StoreChanged())

    # --- engine -------------------------------------------------------------------------------

    def set_engine(self, engine: EngineProtocol, choice: ModelChoice | None) -> None:
        """Make ``engine`` the chat engine (the app closes it on exit)."""
        self.engine, self.engine_choice, self._owns_engine = engine, choice, True
        if choice is not None and choice.source != "worker":
            from llcuda_tui.core.store import lease_file

            self._lease.close()
            self._lease.enter_context(lease_file(choice.path, self.settings.paths))
        pid = getattr(engine, "pid", None)  # an engine process: its GPU memory is ours
        if pid is not None:
            self.gpu_sampler.add_own_pid(pid)

    def release_engine(self) -> None:
        """Close the chat engine (if the app owns it) to make room for another."""
        engine = self.take_engine()
        if engine is not None:
            engine.close()

    def take_engine(self) -> EngineProtocol | None:
        """Let go of the chat engine (on the UI thread); the engine for the caller to close
        (in a worker: closing an engine process can take a while), or None when the app
        does not own it (an injected one stays open)."""
        engine, self.engine = self.engine, None
        self._lease.close()
        return engine if self._owns_engine else None

    # --- screens and commands -----------------------------------------------------------------

    def action_show_screen(self, name: str) -> None:
        if name in self.MODES and name != self.current_mode:
            self.switch_mode(name)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """Textual's own commands, then the app's and ``screen``'s titled bindings."""
        yield from super().get_system_commands(screen)
        yield from palette_commands(self, self, self.BINDINGS)
        yield from palette_commands(self, screen, screen.BINDINGS)

    def action_help(self) -> None:
        from llcuda_tui.screens.help import HelpScreen  # on first use

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.current_mode))

    def action_attach_worker(self) -> None:
        def attach(url: str | None) -> None:
            if url:
                message, ok = self.attach_worker(url)
                self.notify(message, severity="information" if ok else "error")

        self.push_screen(TextPromptDialog("Worker URL", placeholder="http://host:8765"), attach)

    def attach_worker(self, url: str) -> tuple[str, bool]:
        """Connect to a worker by URL (in the background); (message, ok)."""
        try:
            url = check_worker_url(url)
        except ValueError as exc:
            return str(exc), False
        if url not in self.worker_urls:
            self.worker_urls.append(url)
            from llcuda_tui.screens.bench import BenchScreen

            if isinstance(self.screen, BenchScreen):  # others read the list when shown
                self.screen.refresh_targets()
        self.connect_worker(url)
        return f"connecting to worker {url}…", True

    @work(thread=True, exclusive=True, group="attach", exit_on_error=False)
    def connect_worker(self, url: str, model: str | None = None) -> None:
        """Attach the worker at ``url``: its one model becomes the chat engine; a worker of
        many models lists them (and binds ``model``, or the one it has loaded, if any)."""
        from llcuda_tui.core.store import worker_choice, worker_model_choices
        from llcuda_tui.core.worker.remote_models import bind_model, engine_models

        worker = get_current_worker()
        try:
            # a worker loading a large model answers "loading" for a minute or more (and a
            # tiny one for seconds on a busy machine): wait while it does, not a fixed 5 s
            # after which the picker never listed it; quitting the app ends the wait
            engine = self.worker_access.connect(
                url, wait_loaded_s=WORKER_LOAD_WAIT_S, give_up=lambda: worker.is_cancelled
            )
        except LlcudaError as exc:
            self.post_message(AttachFailed(f"worker {url}: {exc}"))
            return
        if "router" not in engine.remote.raw:  # its one model
            self.post_message(ModelLoaded(engine, worker_choice(engine.remote), None))
            return
        try:
            held = engine_models(engine)
            name = model or engine.remote.model  # the one it used last, if any
            if name:
                held = bind_model(engine, name)  # blocks while the worker loads it
        except LlcudaError as exc:
            engine.close()
            chat = self.chat_screen
            if model is not None and chat is not None:  # its status line says "loading …"
                chat.post_message(LoadFailed(f"worker {url} did not load {model}: {exc}"))
            else:
                self.post_message(AttachFailed(f"worker {url}: {exc}"))
            return
        choices = worker_model_choices(engine.url, held.states)
        self.post_message(WorkerChoicesListed(engine.url, choices))
        bound = next((c for c in choices if c.served_model == name), None) if name else None
        if bound is None:
            engine.close()
            return
        self.post_message(ModelLoaded(engine, bound, None))

    @on(WorkerChoicesListed)
    def worker_choices_listed(self, message: WorkerChoicesListed) -> None:
        self.remote_choices[message.url] = message.choices
        chat = self.chat_screen
        if chat is not None:
            chat.list_models()
        if not any(c.state == "loaded" for c in message.choices):
            self.notify(
                f"worker {message.url} serves {len(message.choices)} models: pick one "
                "('… @ URL') and Load"
            )

    @on(ModelLoaded)
    def worker_connected(self, message: ModelLoaded) -> None:
        url = message.choice.url
        if url is not None and message.choice.served_model is None:  # a worker's one model
            self.remote_choices[url] = [message.choice]
        chat = self.chat_screen
        if chat is not None:
            chat.model_loaded(message)
            chat.list_models()
        else:
            self.release_engine()
            self.set_engine(message.engine, message.choice)
        self.notify(f"chatting with {message.choice.name} ({message.engine.info.backend})")

    @on(WorkFailed)
    def worker_failed(self, message: WorkFailed) -> None:
        self.notify(message.error, severity="error", timeout=10)
