"""The Textual app: four screens (modes) over shared services injected at construction.

The app owns what the screens share: the settings, the conversation store, the GPU sampler
(one thread, sampling every second; screens read its ring buffers), and the loaded chat
engine. F1-F4 and the command palette (Ctrl+P) switch screens.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar

from textual import on, work
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.screen import Screen

from llcuda_tui.core.config import Settings
from llcuda_tui.core.conversations import ConversationStore
from llcuda_tui.core.errors import LlcudaError
from llcuda_tui.core.gpu import GpuSampler
from llcuda_tui.messages import ModelLoaded, WorkFailed
from llcuda_tui.screens.bench import BenchScreen
from llcuda_tui.screens.chat import ChatScreen
from llcuda_tui.screens.dialogs import TextPromptDialog
from llcuda_tui.screens.gpu import GpuScreen
from llcuda_tui.screens.models import ModelsScreen

SCREENS = {"chat": "Chat", "models": "Models", "gpu": "GPU", "bench": "Benchmark"}
GPU_INTERVAL_S = 1.0


class LlcudaApp(App[int]):
    """``LlcudaApp(settings=Settings.load())``; every service can be injected for tests."""

    CSS_PATH = "app.tcss"
    TITLE = "llcuda"
    MODES: ClassVar[dict[str, str | Callable[[], Screen]]] = {
        "chat": ChatScreen,
        "models": ModelsScreen,
        "gpu": GpuScreen,
        "bench": BenchScreen,
    }
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f1", "show_screen('chat')", "Chat"),
        Binding("f2", "show_screen('models')", "Models"),
        Binding("f3", "show_screen('gpu')", "GPU"),
        Binding("f4", "show_screen('bench')", "Bench"),
        Binding("ctrl+q", "quit", "Quit", show=False, priority=True),
    ]

    def __init__(
        self,
        settings: Settings,
        *,
        workers: Sequence[str] = (),
        worker_access: Any = None,
        gpu_sampler: GpuSampler | None = None,
        gpu_live: bool = True,
        fit_device: Any = None,
        engine: Any = None,
        engine_choice: Any = None,
        autoload: bool = True,
        clock: Callable[[], float] = time.time,
        start_screen: str = "chat",
    ) -> None:
        super().__init__()
        self.settings = settings
        self.worker_urls = list(workers)
        from llcuda_tui.core.worker.client import WorkerAccess

        self.worker_access: WorkerAccess = worker_access or WorkerAccess()
        """The API key and TLS check for every attached worker (``llcuda tui --api-key-file``)."""
        self.remote_choices: dict[str, Any] = {}
        """The model picker's entry for each worker that has answered, by URL."""
        self.gpu_sampler = gpu_sampler or GpuSampler(GPU_INTERVAL_S, pcie=False)
        self.gpu_live = gpu_live
        self.fit_device = fit_device
        """Device memory for fit badges (None: detect this machine's)."""
        self.engine = engine
        self.engine_choice = engine_choice
        self._owns_engine = engine is None
        self.autoload = autoload
        self.clock = clock
        self.start_screen = start_screen
        self.energy_baseline_mj: dict[int, int] = {}
        self.conversations = ConversationStore.open(settings.paths, clock=clock)
        self.chat_screen: Any = None
        """The Chat screen once it exists (workers' engines are handed to it)."""

    def on_mount(self) -> None:
        if self.gpu_live:
            self.gpu_sampler.start()
        self.switch_mode(self.start_screen)
        if self.conversations.notice:
            self.notify(self.conversations.notice, severity="warning", timeout=15)
        if self.worker_urls:
            from llcuda_tui.commands.tui import worker_support

            missing = worker_support()
            if not missing:
                self.autoload = False
                self.connect_worker(self.worker_urls[0])
            else:
                self.notify(
                    f"--worker {', '.join(self.worker_urls)}: {missing}; using this machine",
                    severity="error",
                    timeout=15,
                )

    def on_unmount(self) -> None:
        self.gpu_sampler.close()
        if self.engine is not None and self._owns_engine:
            self.engine.close()
        self.conversations.close()

    # --- engine -------------------------------------------------------------------------------

    def set_engine(self, engine: Any, choice: Any) -> None:
        """Make ``engine`` the chat engine (the app closes it on exit)."""
        self.engine, self.engine_choice, self._owns_engine = engine, choice, True
        pid = getattr(engine, "pid", None)  # an engine process: its GPU memory is ours
        if pid is not None:
            self.gpu_sampler.add_own_pid(pid)

    def release_engine(self) -> None:
        """Close the chat engine (if the app owns it) to make room for another."""
        engine, self.engine = self.engine, None
        if engine is not None and self._owns_engine:
            engine.close()

    # --- screens and commands -----------------------------------------------------------------

    def action_show_screen(self, name: str) -> None:
        if name in SCREENS and name != self.current_mode:
            self.switch_mode(name)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for mode, title in SCREENS.items():
            yield SystemCommand(
                f"{title} screen", f"Switch to the {title} screen", self._switcher(mode)
            )
        yield SystemCommand(
            "Attach worker",
            "Use a remote llcuda worker (llcuda serve) by URL",
            self.action_attach_worker,
        )
        extra = getattr(screen, "palette_commands", None)
        if extra is not None:
            yield from extra()

    def _switcher(self, mode: str) -> Callable[[], None]:
        return lambda: self.action_show_screen(mode)

    def action_attach_worker(self) -> None:
        def attach(url: str | None) -> None:
            if url:
                message, ok = self.attach_worker(url)
                self.notify(message, severity="information" if ok else "error")

        self.push_screen(TextPromptDialog("Worker URL", placeholder="http://host:8765"), attach)

    def attach_worker(self, url: str) -> tuple[str, bool]:
        """Connect to a worker by URL (in the background); (message, ok)."""
        from llcuda_tui.commands.tui import check_worker_url, worker_support

        try:
            url = check_worker_url(url)
        except ValueError as exc:
            return str(exc), False
        missing = worker_support()
        if missing:
            return missing, False
        if url not in self.worker_urls:
            self.worker_urls.append(url)
            if isinstance(self.screen, BenchScreen):  # others read the list when shown
                self.screen.refresh_targets()
        self.connect_worker(url)
        return f"connecting to worker {url}…", True

    @work(thread=True, exclusive=True, group="attach", exit_on_error=False)
    def connect_worker(self, url: str) -> None:
        from llcuda_tui.core.store import worker_choice

        try:
            engine = self.worker_access.connect(url, wait_loaded_s=5.0)
        except LlcudaError as exc:
            self.post_message(WorkFailed("attach", f"worker {url}: {exc}"))
            return
        self.post_message(ModelLoaded(engine, worker_choice(engine.remote), None))

    @on(ModelLoaded)
    def worker_connected(self, message: ModelLoaded) -> None:
        self.remote_choices[message.choice.url] = message.choice
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
