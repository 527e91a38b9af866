"""The message box: multi-line, Enter sends, Shift+Enter or Ctrl+J adds a line.

Why not an ``Input``: it is one line, so a pasted paragraph kept only its first line (the
rest was dropped at the first newline). A ``TextArea`` takes a paste whole; this one grows
with its text up to a few lines, then scrolls.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from textual import events
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import TextArea

NEWLINE_KEYS = ("shift+enter", "ctrl+j")
"""Keys that add a line. Most terminals send Shift+Enter as a plain Enter; Ctrl+J (a line
feed) reaches the app in every terminal, so it is the one the placeholder names."""


class PromptArea(TextArea):
    """A multi-line message box; Enter posts :class:`PromptArea.Submitted`."""

    # compact: no border, so without a rule of its own its focus showed only as the cursor,
    # and not at all in the cursor's blink-off phase
    DEFAULT_CSS = """
    PromptArea {
        height: auto;
        min-height: 3;
        max-height: 8;
    }
    PromptArea.-textual-compact {
        border-left: outer $surface !important;
    }
    PromptArea.-textual-compact:focus {
        border-left: outer $accent !important;
        background: $boost;
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        # Enter and Ctrl+J are handled first in _on_key (TextArea inserts a line on Enter);
        # listed here for the help screen, and for the footer's sake they stay hidden
        Binding("enter", "submit", "Send", show=False),
        Binding("ctrl+j", "newline", "New line", show=False, tooltip="Shift+Enter too"),
        # TextArea binds Ctrl+Y to redo; in the chat it copies a message (redo: Super+Y)
        Binding("ctrl+y", "screen.copy_message", "Copy", show=False),
    ]

    @dataclass
    class Submitted(Message):
        """Enter was pressed: ``value`` is the box's text."""

        prompt: PromptArea
        value: str

        @property
        def control(self) -> PromptArea:
            return self.prompt

    def __init__(self, *, placeholder: str = "", id: str | None = None) -> None:
        super().__init__(
            id=id,
            soft_wrap=True,
            show_line_numbers=False,
            tab_behavior="focus",
            compact=True,
            placeholder=placeholder,
        )

    @property
    def value(self) -> str:
        """The text in the box (the name ``Input`` uses, so callers read the same)."""
        return self.text

    @value.setter
    def value(self, text: str) -> None:
        self.load_text(text)
        self.move_cursor(self.document.end)

    def action_submit(self) -> None:
        self.post_message(self.Submitted(self, self.text))

    def action_newline(self) -> None:
        self.insert("\n")

    async def _on_key(self, event: events.Key) -> None:
        if event.key == "enter":
            event.stop()
            event.prevent_default()
            self.action_submit()
            return
        if event.key in NEWLINE_KEYS:
            event.stop()
            event.prevent_default()
            self.action_newline()
            return
        await super()._on_key(event)
