"""A reply as it streams: append-only text, soft-wrapped into lines (Textual's Line API).

It is the body of the streaming :class:`~llcuda_tui.widgets.ChatMessage`, the last turn of
the transcript. Why not a ``Markdown`` or a ``Static`` updated with the text so far: each
update re-parses or re-wraps the whole reply and re-renders all of it. Here an append wraps
only the new text and repaints only the lines that changed.

Its height is what costs: a change of height is a layout of the screen and, in a transcript
scrolled to its end, a repaint of every line in it (measured, bench/tui_ui_cost.py, 120x40:
~40 ms of the UI thread each in a long transcript, 8-13 ms with the repaint in a short one;
one per new line took 33-56 % of a core at 250 tok/s, against 6-19 % for the fixed-size panel
this replaced). So it has two heights: ``step`` lines (what it is mounted with, laid out
before the first token) and, once the text outgrows that, ``max_lines`` (half the transcript,
set by it): one layout while the reply streams, where growing ``step`` lines at a time made
two to four. At ``max_lines`` it keeps its size and shows the newest lines, which repaints
only itself. The finished reply, rendered as Markdown in the same turn, has every line.
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
    """Append-only text, soft-wrapped at word boundaries; ``step`` lines tall, then
    ``max_lines`` once its lines outgrow ``step`` (then it shows the newest ones). Without a
    ``max_lines`` it is as tall as its lines rounded up to ``step``."""

    DEFAULT_CSS = """
    StreamView {
        height: auto;
    }
    """

    def __init__(
        self,
        *,
        step: int = 1,
        max_lines: int = 0,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(id=id, classes=classes)
        self.step = max(1, step)
        self.max_lines = max_lines
        """The tallest it grows (0: no limit)."""
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
        """The wrapped lines so far (the view shows the last ones once they outgrow it)."""
        return list(self._lines)

    def height_for(self, n_lines: int) -> int:
        """The height for ``n_lines`` lines: ``step`` while they fit in it, then
        ``max_lines`` (without one: rounded up to ``step``)."""
        if self.max_lines > 0:
            return min(self.step, self.max_lines) if n_lines <= self.step else self.max_lines
        return -(-n_lines // self.step) * self.step

    def set_limits(self, step: int, max_lines: int) -> None:
        """New ``step`` and ``max_lines`` (the transcript was resized)."""
        if (max(1, step), max_lines) != (self.step, self.max_lines):
            self.step, self.max_lines = max(1, step), max_lines
            self.refresh(layout=True)

    def _rewrap(self, width: int) -> None:
        self._width = width
        self._lines = [""]
        self._col = wrap_into(self._lines, 0, self.text, width) if self._text else 0

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        if width != self._width and width > 0:  # the first layout, or a resize: rare
            self._rewrap(width)
        return self.height_for(len(self._lines))

    def append(self, text: str) -> None:
        """Add ``text``: repaint the lines it changed, lay out only when the height changes."""
        if not text:
            return
        self._text.append(text)
        if not self._width:  # the first layout wraps it
            self.refresh(layout=True)
            return
        lines = self._lines
        height = self.height_for(len(lines))
        first_changed = len(lines) - 1
        self._col = wrap_into(lines, self._col, text, self._width)
        self._style = self.rich_style  # once per batch: it walks the DOM
        added = len(lines) - 1 - first_changed
        if self.height_for(len(lines)) != height:
            self.refresh(layout=True)
        elif added and len(lines) > height:  # it shows the newest lines: they all moved up
            self.refresh()
        else:  # repaint only the lines that changed
            top = max(0, len(lines) - height)
            self.refresh(Region(0, first_changed - top, self._width, added + 1))

    def render_line(self, y: int) -> Strip:
        height = self.height_for(len(self._lines))
        index = max(0, len(self._lines) - height) + y
        text = self._lines[index] if index < len(self._lines) else ""
        style = self._style or self.rich_style
        return Strip([Segment(text, style)]).crop_extend(0, self.content_region.width, style)
