"""A reply as it streams: a fixed-size view of the newest wrapped lines (Textual's Line API).

Why not a growing widget, or a ``Log``: a widget that grows re-lays-out the screen on every
update, and a scrolling ``Log`` makes the screen reflow on every new line (each ~5-10 ms of
the UI thread, taken from the engine on a small machine). This view never changes size and
never scrolls: appending text repaints its own region and nothing else.
"""

from __future__ import annotations

import re

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from textual.geometry import Region
from textual.strip import Strip
from textual.widget import Widget

_PIECES = re.compile(r"\n|[^\S\n]+|[^\s]+")


class StreamView(Widget):
    """Append-only text, soft-wrapped at word boundaries; shows the last lines that fit."""

    DEFAULT_CSS = """
    StreamView {
        height: 12;
        border: round $primary 60%;
        border-title-color: $text-muted;
        border-subtitle-color: $text-muted;
        padding: 0 1;
        background: $surface;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._lines: list[str] = [""]
        self._col = 0
        self._text: list[str] = []
        self._style: Style | None = None

    @property
    def text(self) -> str:
        return "".join(self._text)

    @property
    def lines(self) -> list[str]:
        """The wrapped lines so far (the view shows the last ones)."""
        return list(self._lines)

    def reset(self, title: str = "") -> None:
        self._lines, self._col, self._text = [""], 0, []
        self._style = None
        self.border_title = title
        self.refresh()

    def append(self, text: str) -> None:
        """Add ``text``, breaking lines before words that would overflow the width."""
        if not text:
            return
        self._text.append(text)
        width = max(8, self.content_region.width)
        height = self.content_region.height
        lines, col = self._lines, self._col
        first_changed = len(lines) - 1
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
        self._col = col
        self._style = self.rich_style  # once per batch: it walks the DOM
        added = len(lines) - 1 - first_changed
        if added and len(lines) > height:  # the view shifted up: every visible line changed
            self.refresh()
        else:  # repaint only the lines that changed
            top = max(0, len(lines) - height)
            self.refresh(Region(0, first_changed - top, width, added + 1))

    def render_line(self, y: int) -> Strip:
        height = self.content_region.height
        index = max(0, len(self._lines) - height) + y
        text = self._lines[index] if index < len(self._lines) else ""
        style = self._style or self.rich_style
        return Strip([Segment(text, style)]).crop_extend(0, self.content_region.width, style)
