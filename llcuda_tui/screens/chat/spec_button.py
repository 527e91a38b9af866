"""The model bar's spec button: it says what the next Load uses for speculative decoding
(``spec off``, ``lookup``, ``draft``); pressed, it opens the load settings dialog; a new
choice is remembered in config.toml's ``[tui]`` (a thread worker: the file is replaced
atomically) and posted as :class:`SpecButton.Changed` for the screen (its fit badges count a
draft model's memory)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, cast

from textual import on, work
from textual.message import Message
from textual.widgets import Button

from llcuda_tui.core.errors import LlcudaError
from llcuda_tui.messages import SettingsSaved, SpecSaveFailed
from llcuda_tui.screens.chat.load_dialog import SpecChoice

if TYPE_CHECKING:
    from llcuda_tui.app import LlcudaApp
    from llcuda_tui.core.config import Settings
    from llcuda_tui.core.store import ModelChoice


class SpecButton(Button):
    """Speculative decoding of the next Load: ``spec`` is the current choice."""

    DEFAULT_CSS = """
    SpecButton { min-width: 10; }
    """
    # hidden under 100 columns (chat.tcss): the Chat screen's F8 opens the dialog there

    @dataclass
    class Changed(Message):
        """The user chose another speculative decoding (already shown on the button)."""

        spec: SpecChoice

    def __init__(self, spec: SpecChoice, drafts: Callable[[], list[ModelChoice]], id: str) -> None:
        super().__init__(spec.short, id=id, tooltip="Speculative decoding of the next Load")
        self.spec = spec
        self.drafts = drafts
        """The models a draft can be, as listed now."""

    @property
    def llcuda(self) -> LlcudaApp:
        return cast("LlcudaApp", self.app)

    @on(Button.Pressed)
    def pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.open_dialog()

    def open_dialog(self) -> None:
        """The load settings dialog; a new choice is shown, saved and posted."""
        from llcuda_tui.screens.chat.load_dialog import LoadSettingsDialog

        def done(spec: SpecChoice | None) -> None:
            if spec is None or spec == self.spec:
                return
            self.spec = spec
            self.label = spec.short
            self.save(self.llcuda.settings, spec)
            self.post_message(self.Changed(spec))

        self.app.push_screen(LoadSettingsDialog(self.spec, self.drafts()), done)

    @work(thread=True, exclusive=True, group="save-spec", exit_on_error=False)
    def save(self, settings: Settings, spec: SpecChoice) -> None:
        from llcuda_tui.core.config import save_setting

        try:  # three lines of [tui], each written atomically
            for key, value in (
                ("speculative", spec.mode),
                ("draft_model", spec.draft_model),
                ("draft_max", spec.draft_max),
            ):
                settings = save_setting(settings, "tui", key, value)
        except LlcudaError as exc:
            self.post_message(SpecSaveFailed(f"load settings not remembered: {exc}"))
            return
        self.post_message(SettingsSaved(settings, "load settings saved"))

    @on(SettingsSaved)
    def saved(self, message: SettingsSaved) -> None:
        message.stop()
        # only [tui]'s spec keys: another screen may have saved other settings meanwhile
        tui, app = message.settings.tui, self.llcuda
        mine = {k: getattr(tui, k) for k in ("speculative", "draft_model", "draft_max")}
        app.settings = replace(app.settings, tui=replace(app.settings.tui, **mine))

    @on(SpecSaveFailed)
    def save_failed(self, message: SpecSaveFailed) -> None:
        message.stop()
        self.notify(message.error, severity="warning", timeout=8)
