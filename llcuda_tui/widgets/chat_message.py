"""One finished turn of a conversation, rendered as Markdown, with its run record."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static


class ChatMessage(Vertical, can_focus=True):
    """A user or assistant turn with its run record underneath (a streaming reply is shown
    by StreamView and becomes a ChatMessage when it is complete)."""

    DEFAULT_CSS = """
    ChatMessage {
        height: auto;
        margin: 0 0 1 0;
        padding: 0 1;
        border-left: thick $primary;
    }
    ChatMessage.-user { border-left: thick $accent; background: $boost; }
    ChatMessage.-system { border-left: thick $warning; }
    ChatMessage:focus { background: $primary 15%; }
    ChatMessage > .role { color: $text-muted; text-style: bold; }
    ChatMessage > .record { color: $text-muted; text-style: italic; }
    ChatMessage > .record.-empty { display: none; }
    ChatMessage > Markdown { margin: 0; padding: 0; background: transparent; }
    """

    def __init__(
        self,
        role: str,
        content: str = "",
        *,
        label: str | None = None,
        record_text: str = "",
        seq: int | None = None,
    ) -> None:
        super().__init__(classes=f"-{role}")
        self.role = role
        self.seq = seq
        self._text = content
        self._label = label or {"user": "you", "assistant": "assistant"}.get(role, role)
        self._record_text = record_text

    def compose(self) -> ComposeResult:
        # imported with the first message, not with the Chat screen (markdown-it and pygments:
        # 34 ms of the TUI's start-up)
        from textual.widgets import Markdown

        yield Static(self._label, classes="role", markup=False)
        yield Markdown(self._text)
        yield Static(
            self._record_text,
            classes="record" + ("" if self._record_text else " -empty"),
            markup=False,
        )

    @property
    def text(self) -> str:
        return self._text

    def show_record(self, record_text: str) -> None:
        record = self.query_one(".record", Static)
        record.update(record_text)
        record.set_class(not record_text, "-empty")
