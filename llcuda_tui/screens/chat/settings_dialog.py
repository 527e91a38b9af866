"""The conversation settings dialog: system prompt (from a preset or typed) and sampling."""

from __future__ import annotations

from dataclasses import fields
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static, TextArea

from llcuda_tui.core.conversations import ChatSettings
from llcuda_tui.core.errors import LlcudaError
from llcuda_tui.widgets import KeyFooter

FIELD_LABELS = {
    "temperature": "temperature (0 = greedy)",
    "top_k": "top-k",
    "top_p": "top-p",
    "min_p": "min-p",
    "repeat_penalty": "repeat penalty",
    "repeat_last_n": "repeat last n",
    "seed": "seed (-1 random)",
    "max_tokens": "max tokens (reply budget)",
}

Result = tuple[str, ChatSettings]


def preset_of(system_prompt: str, presets: dict[str, str]) -> str | None:
    """The preset whose text the system prompt is (the conversation keeps the text, not
    the name), or None for a prompt of its own ('(custom)')."""
    return next((name for name, text in presets.items() if text == system_prompt), None)


class ChatSettingsDialog(ModalScreen[Result | None]):
    """Edit one conversation's system prompt and sampling; Enter in a field or Ctrl+S
    saves (the Chat screen says so), Esc cancels."""

    DEFAULT_CSS = """
    ChatSettingsDialog { align: center middle; }
    ChatSettingsDialog > Vertical {
        width: 90; max-width: 100%; height: auto; max-height: 95%; padding: 1 2;
        border: thick $primary; background: $surface;
    }
    ChatSettingsDialog TextArea { height: 6; }
    ChatSettingsDialog Grid { grid-size: 4; grid-columns: 1fr 12 1fr 12; height: auto; }
    ChatSettingsDialog Grid Label { padding: 1 1 0 0; }
    ChatSettingsDialog #error { color: $error; height: auto; }
    ChatSettingsDialog .buttons { height: auto; align-horizontal: right; margin-top: 1; }
    ChatSettingsDialog Button { margin-left: 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss(None)", "Cancel"),
        Binding("ctrl+s", "save", "Save", tooltip="Enter in a field saves too"),
    ]

    def __init__(self, system_prompt: str, settings: ChatSettings, presets: dict[str, str]):
        super().__init__()
        self.system_prompt = system_prompt
        self.settings = settings
        self.presets = presets

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("System prompt preset")
            yield Select(
                [(n, n) for n in self.presets],
                prompt="(custom)",
                value=preset_of(self.system_prompt, self.presets) or Select.NULL,
                id="preset",
            )
            yield TextArea(self.system_prompt, id="system")
            yield Label("Sampling (this conversation)")
            with Grid():
                for f in fields(ChatSettings):
                    yield Label(FIELD_LABELS.get(f.name, f.name))
                    yield Input(str(getattr(self.settings, f.name)), id=f"f-{f.name}")
            yield Static("", id="error")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Save", id="save", variant="primary")
        yield KeyFooter(app_keys=False)

    @on(Input.Submitted)
    def field_submitted(self) -> None:
        self.action_save()

    def on_select_changed(self, event: Select.Changed) -> None:
        system = self.query_one("#system", TextArea)
        if (
            isinstance(event.value, str)
            and event.value in self.presets
            and system.text != self.presets[event.value]
        ):
            system.text = self.presets[event.value]

    @on(TextArea.Changed, "#system")
    def system_changed(self) -> None:
        """The preset follows the text: typed away from it, the prompt is '(custom)'."""
        preset, text = self.query_one("#preset", Select), self.query_one("#system", TextArea).text
        if isinstance(preset.value, str) and self.presets.get(preset.value) == text:
            return  # two presets may have the same text: keep the one picked
        preset.value = preset_of(text, self.presets) or Select.NULL

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "save":
            self.action_save()
        else:
            self.dismiss(None)

    def action_save(self) -> None:
        values = {f.name: self.query_one(f"#f-{f.name}", Input).value for f in fields(ChatSettings)}
        try:
            settings = ChatSettings.from_dict(values, self.settings)
        except LlcudaError as exc:
            self.query_one("#error", Static).update(str(exc))
            return
        self.dismiss((self.query_one("#system", TextArea).text, settings))
