"""Small modal dialogs: confirm, and ask for one line of text. Each has a footer with its
keys; a destructive question (delete a model, a conversation) starts on **No**."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label

from llcuda_tui.widgets import KeyFooter

# a Label is as wide as its text by default: a long question ran past the dialog's edge and
# was cut (it wraps at the dialog's width now)
DIALOG_CSS = """
{name} {{ align: center middle; }}
{name} > Vertical {{
    width: 72; max-width: 100%; height: auto; padding: 1 2;
    border: thick $primary; background: $surface;
}}
{name} > Vertical > Label {{ width: 1fr; }}
{name} .buttons {{ height: auto; margin-top: 1; align-horizontal: right; }}
{name} Button {{ margin-left: 1; }}
"""


class ConfirmDialog(ModalScreen[bool]):
    """Yes / no; Enter presses the focused button, y says yes, Esc says no. A
    ``destructive`` question starts on the no button: Enter alone never deletes."""

    DEFAULT_CSS = DIALOG_CSS.format(name="ConfirmDialog")
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss(False)", "Cancel"),
        Binding("y", "dismiss(True)", "Yes"),
        Binding("left,right", "app.focus_previous", "Other button", show=False),
    ]

    def __init__(
        self, question: str, yes: str = "Yes", no: str = "Cancel", *, destructive: bool = False
    ) -> None:
        super().__init__()
        self.question = question
        self.yes, self.no = yes, no
        self.destructive = destructive

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.question, markup=False)
            with Horizontal(classes="buttons"):
                yield Button(self.no, id="no")
                yield Button(self.yes, id="yes", variant="error" if self.destructive else "warning")
        yield KeyFooter(app_keys=False)

    def on_mount(self) -> None:
        self.query_one("#no" if self.destructive else "#yes", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


class TextPromptDialog(ModalScreen[str | None]):
    """One line of text; Enter accepts, Esc cancels (None)."""

    DEFAULT_CSS = DIALOG_CSS.format(name="TextPromptDialog")
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, question: str, value: str = "", placeholder: str = "") -> None:
        super().__init__()
        self.question = question
        self.value = value
        self.placeholder = placeholder

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.question, markup=False)
            yield Input(self.value, placeholder=self.placeholder, id="answer")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("OK", id="ok", variant="primary")
        yield KeyFooter(app_keys=False)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(self.query_one(Input).value if event.button.id == "ok" else None)
