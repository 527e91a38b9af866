"""Import a local GGUF file: the path completes as it is typed (Right takes the completion),
a path that is not a file is refused in the dialog with the typed text kept, and an import
that fails later reopens the dialog with the path and the error."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import Button, Input, Label

from llcuda_tui.screens.dialogs import TextPromptDialog
from llcuda_tui.widgets import PathSuggester

QUESTION = "Import a local GGUF file (hardlinked into the store); Right completes the path"


class ImportDialog(TextPromptDialog):
    """Asks for the path of a GGUF file; dismisses with it only when it names a file."""

    DEFAULT_CSS = """
    ImportDialog #import-error { color: $error; width: 1fr; }
    ImportDialog #import-error.-empty { display: none; }
    """

    def __init__(self, value: str = "", error: str = "") -> None:
        super().__init__(QUESTION, value=value, placeholder="/path/to/model.gguf")
        self.error = error

    def on_mount(self) -> None:
        answer = self.query_one("#answer", Input)
        answer.suggester = PathSuggester((".gguf",))
        error = Label(self.error, id="import-error", markup=False)
        error.set_class(not self.error, "-empty")
        self.query_one("Vertical").mount(error, after=answer)
        answer.focus()

    def show_error(self, text: str) -> None:
        error = self.query_one("#import-error", Label)
        error.update(text)
        error.set_class(not text, "-empty")

    # prevent_default: TextPromptDialog's own handlers (further down the MRO) would dismiss
    # with the text unchecked
    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        event.prevent_default()
        self.accept(event.value)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        event.prevent_default()
        if event.button.id == "ok":
            self.accept(self.query_one("#answer", Input).value)
        else:
            self.dismiss(None)

    def accept(self, typed: str) -> None:
        """Dismiss with ``typed`` when it names a file; else say why and keep it."""
        text = typed.strip()
        if not text:
            self.show_error("type the path of a .gguf file")
            return
        path = Path(text).expanduser()
        if not path.exists():
            self.show_error(f"no such file: {path}")
        elif path.is_dir():
            self.show_error(f"{path} is a directory: type the .gguf file in it")
        else:
            self.dismiss(text)
