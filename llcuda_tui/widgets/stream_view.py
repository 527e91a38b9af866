"""A reply as it streams: append-only text, soft-wrapped into lines (Textual's Line API).

It is the body of the streaming :class:`~llcuda_tui.widgets.ChatMessage`, the last turn of
the transcript, and grows by whole lines. Why not a ``Markdown`` or a ``Static`` updated with
the text so far: each update re-parses or re-wraps the whole reply and re-renders every line
of it (the Markdown widget re-mounts blocks; ~5-10 ms of the UI thread a batch on a small
machine, taken from the engine). Here an append wraps only the new text, repaints only the
lines that changed, and asks for a layout only when a line was added: at most one per batch
(the screen's drain timer), never one per token.
"""

from __future__ import annotations

import re

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from textual.geometry import Region, Size
from textual.strip import Strip
from textual.widget import Widget

_PIECES = re.compile(r"\n|[^\S\n]+|[^\s]+")


def wrap_into(lines: list[str], col: int, text: str, width: int) -> int:
    """Append ``text`` to ``lines`` (the last one is open, ``col`` cells long), breaking
    lines before words that would overflow ``width``; the open line's length after."""
    for piece in _PIECES.findall(text):
        if piece == "\n":
            lines.append("")
            col = 0
            continue
        n = cell_len(piece)
        if piece.isspace():
            if col + n <= width:
                lines[-1] += piece
                col += n
            continue
        while col + n > width and (col > 0 or n > width):
            if col > 0:
                lines.append("")
                col = 0
                continue
            lines[-1] += piece[:width]
            lines.append("")
            piece = piece[width:]
            n = cell_len(piece)
        lines[-1] += piece
        col += n
    return col


class StreamView(Widget):
    """Append-only text, soft-wrapped at word boundaries, as tall as its lines."""

    DEFAULT_CSS = """
    StreamView {
        height: auto;
    }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._lines: list[str] = [""]
        self._col = 0
        self._text: list[str] = []
        self._width = 0
        """The width the lines are wrapped at (0: not laid out yet, nothing wrapped)."""
        self._style: Style | None = None

    @property
    def text(self) -> str:
        return "".join(self._text)

    @property
    def lines(self) -> list[str]:
        """The wrapped lines so far."""
        return list(self._lines)

    def _rewrap(self, width: int) -> None:
        self._width = width
        self._lines = [""]
        self._col = wrap_into(self._lines, 0, self.text, width) if self._text else 0

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        if width != self._width and width > 0:  # the first layout, or a resize: rare
            self._rewrap(width)
        return len(self._lines)

    def append(self, text: str) -> None:
        """Add ``text``: repaint the lines it changed, and lay out only when it added one."""
        if not text:
            return
        self._text.append(text)
        if not self._width:  # the first layout wraps it
            self.refresh(layout=True)
            return
        lines = self._lines
        first_changed = len(lines) - 1
        self._col = wrap_into(lines, self._col, text, self._width)
        self._style = self.rich_style  # once per batch: it walks the DOM
        added = len(lines) - 1 - first_changed
        if added:
            self.refresh(Region(0, first_changed, self._width, added + 1), layout=True)
        else:
            self.refresh(Region(0, first_changed, self._width, 1))

    def render_line(self, y: int) -> Strip:
        text = self._lines[y] if y < len(self._lines) else ""
        style = self._style or self.rich_style
        return Strip([Segment(text, style)]).crop_extend(0, self.content_region.width, style)
