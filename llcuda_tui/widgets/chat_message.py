"""One finished turn of a conversation, rendered as Markdown, with its run record."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widget import Widget
from textual.widgets import Static

from llcuda_tui.widgets.stream_view import StreamView

if TYPE_CHECKING:
    from markdown_it import MarkdownIt
    from markdown_it.rules_core import StateCore

_FENCE = re.compile(r"^\s*(```|~~~)")
_BLOCK_START = re.compile(r"^\s*([-*+]\s|\d+[.)]\s|#|>|\|)")


def keep_shape(text: str) -> str:
    """``text`` as Markdown that keeps the shape the model gave it.

    Models often write code without fences: a paragraph whose later lines are indented
    (``def f(s):`` / ``    return s[::-1]``). Markdown would join those lines and drop
    the indent, so such a paragraph is fenced here. Line breaks elsewhere (poems, addresses)
    are kept by the parser (``breaks``); fenced blocks, lists and tables pass through.
    """
    out: list[str] = []
    para: list[str] = []
    in_fence = False

    def flush() -> None:
        indented = any(line[:1].isspace() for line in para[1:])
        if indented and not any(_BLOCK_START.match(line) for line in para):
            out.extend(["```", *para, "```"])
        else:
            out.extend(para)
        para.clear()

    for line in text.split("\n"):
        if _FENCE.match(line):
            flush()
            in_fence = not in_fence
            out.append(line)
        elif in_fence:
            out.append(line)
        elif not line.strip():
            flush()
            out.append(line)
        else:
            para.append(line)
    flush()
    return "\n".join(out)


def hard_break_parser() -> MarkdownIt:
    """Textual's "gfm-like" parser, with a line break in the text kept as one.

    markdown-it's ``breaks`` option only changes its HTML output; Textual renders a
    ``softbreak`` token as a space, so the tokens themselves become ``hardbreak``."""
    from markdown_it import MarkdownIt

    def soft_to_hard(state: StateCore) -> None:
        for token in state.tokens:
            for child in token.children or ():
                if child.type == "softbreak":
                    child.type = "hardbreak"

    parser = MarkdownIt("gfm-like")
    parser.core.ruler.push("soft_to_hard_breaks", soft_to_hard)
    return parser


class ChatMessage(Vertical, can_focus=True):
    """A user or assistant turn with its run record underneath.

    A reply streams in the turn that keeps it (``streaming=True``): its text goes into a
    :class:`StreamView` (plain wrapped lines, cheap to append to) and the record line shows
    the progress; :meth:`finish` then renders the text as Markdown in the same place.

    Focused, Up and Down move the focus to the turn before or after it (the screen's Ctrl+Y
    copies the focused turn)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "neighbour(-1)", "Previous turn", show=False),
        Binding("down", "neighbour(1)", "Next turn", show=False),
    ]

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
    ChatMessage > StreamView { margin: 0 0 1 0; }
    """

    def __init__(
        self,
        role: str,
        content: str = "",
        *,
        label: str | None = None,
        record_text: str = "",
        seq: int | None = None,
        streaming: bool = False,
    ) -> None:
        super().__init__(classes=f"-{role}")
        self.role = role
        self.seq = seq
        self._text = content
        self._label = label or {"user": "you", "assistant": "assistant"}.get(role, role)
        self._record_text = record_text
        self.stream: StreamView | None = StreamView() if streaming else None
        """The body while the reply streams (None once it is finished, or never streamed)."""

    def compose(self) -> ComposeResult:
        yield Static(self._label, classes="role", markup=False)
        yield self.stream if self.stream is not None else self.markdown(self._text)
        yield Static(
            self._record_text,
            classes="record" + ("" if self._record_text else " -empty"),
            markup=False,
        )

    @staticmethod
    def markdown(text: str) -> Widget:
        # imported with the first message, not with the Chat screen (markdown-it and pygments:
        # 34 ms of the TUI's start-up)
        from textual.widgets import Markdown

        return Markdown(keep_shape(text), parser_factory=hard_break_parser)

    @property
    def text(self) -> str:
        return self.stream.text if self.stream is not None else self._text

    def append(self, text: str) -> None:
        """Streaming: add ``text`` to the reply (the screen's drain timer, once a batch)."""
        if self.stream is not None:
            self.stream.append(text)

    def show_progress(self, text: str) -> None:
        """Streaming: the record line says ``text`` (tokens and speed, prefill); one line
        whose height never changes, so no layout."""
        self.query_one(".record", Static).update(text, layout=False)

    def finish(self, content: str, record_text: str, seq: int | None = None) -> None:
        """The reply is complete: render ``content`` as Markdown where the streamed text was,
        in this same turn (it keeps its place in the transcript), with its record."""
        stream, self.stream = self.stream, None
        self._text, self.seq = content, seq
        if stream is not None:
            self.mount(self.markdown(content), before=stream)
            stream.remove()
        self.show_record(record_text)

    def action_neighbour(self, step: int) -> None:
        """Focus the turn ``step`` places away (the first or last one stays put)."""
        parent = self.parent
        if parent is None:
            return
        turns = [w for w in parent.children if isinstance(w, ChatMessage)]
        at = turns.index(self) + step
        if 0 <= at < len(turns):
            turns[at].focus()

    def show_record(self, record_text: str) -> None:
        record = self.query_one(".record", Static)
        record.update(record_text)
        record.set_class(not record_text, "-empty")
