"""A labelled history plot: name, sparkline, current value."""

from __future__ import annotations

from collections.abc import Sequence

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Label, Sparkline


class MetricPlot(Horizontal):
    """``label ▁▂▄▆█ value`` on one line."""

    DEFAULT_CSS = """
    MetricPlot { height: 1; }
    MetricPlot > .label { width: 12; color: $text-muted; }
    MetricPlot > Sparkline { width: 1fr; margin: 0 1; }
    MetricPlot > .value { width: 22; }
    """

    def __init__(self, label: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._label = label

    def compose(self) -> ComposeResult:
        yield Label(self._label, classes="label")
        yield Sparkline([])
        yield Label("n/a", classes="value")

    def show(self, values: Sequence[float], value_text: str) -> None:
        self.query_one(Sparkline).data = list(values)
        self.query_one(".value", Label).update(value_text)
