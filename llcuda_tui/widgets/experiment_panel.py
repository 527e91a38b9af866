"""The Benchmark screen's Experiments tab: the experiments in the results store, the progress
of a running one (``llcuda experiment run`` writes each finished cell to the same SQLite file,
so this panel sees it on its next poll), and a done one's table with in-terminal bar plots."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable, ProgressBar, Static

if TYPE_CHECKING:
    from llcuda_tui.core.config import Paths

POLL_S = 1.0
_BLOCKS = " ▏▎▍▌▋▊▉█"


def bar_lines(items: list[tuple[str, float]], width: int = 40) -> list[str]:
    """``label  ████▌  123.4`` per item, bars scaled to the largest value."""
    if not items:
        return []
    top = max(v for _, v in items) or 1.0
    pad = max(len(label) for label, _ in items)
    out = []
    for label, value in items:
        eighths = round(value / top * width * 8)
        bar = "█" * (eighths // 8) + (_BLOCKS[eighths % 8] if eighths % 8 else "")
        out.append(f"{label:<{pad}}  {bar:<{width}}  {value:,.1f}")
    return out


@dataclass
class ExperimentView:
    """What the panel shows of the experiments, read in a thread."""

    listing: list[dict[str, Any]] = field(default_factory=list)
    selected: int | None = None
    table: list[dict[str, str]] = field(default_factory=list)
    done: int = 0
    total: int = 0
    status: str = ""


class ExperimentPanel(Vertical):
    DEFAULT_CSS = """
    ExperimentPanel #experiments { height: 8; }
    ExperimentPanel #experiment-cells { height: 1fr; }
    ExperimentPanel #experiment-plot { height: auto; padding: 0 1; }
    ExperimentPanel #experiment-progress { padding: 0 1; }
    """

    class Loaded(Message):
        """A fresh read of the store (posted from the worker thread)."""

        def __init__(self, view: ExperimentView) -> None:
            super().__init__()
            self.view = view

    COLUMNS: ClassVar[tuple[str, ...]] = ("id", "date", "status", "cells", "name")

    def __init__(self, paths: Paths, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.paths = paths
        self.selected: int | None = None
        self.view = ExperimentView()

    def compose(self) -> ComposeResult:
        yield DataTable(id="experiments", cursor_type="row")
        yield ProgressBar(total=1, id="experiment-progress")
        yield DataTable(id="experiment-cells", cursor_type="row")
        yield Static("", id="experiment-plot", markup=False)

    def on_mount(self) -> None:
        self.query_one("#experiments", DataTable).add_columns(*self.COLUMNS)
        self.load()
        self.set_interval(POLL_S, self.load)

    @work(thread=True, exclusive=True, exit_on_error=False, group="experiments")
    def load(self) -> None:
        from llcuda_tui.core.experiment import ExperimentStore, cell_table

        view = ExperimentView()
        with ExperimentStore.open(self.paths) as store:
            exps = store.list_experiments()
            view.listing = [e.to_dict() for e in exps]
            chosen = next((e for e in exps if e.experiment_id == self.selected), None)
            chosen = chosen or (exps[0] if exps else None)
            if chosen is not None:
                view.selected = chosen.experiment_id
                view.table = cell_table(store, chosen)
                view.done, view.total, view.status = chosen.done, len(chosen.cells), chosen.status
        self.post_message(self.Loaded(view))

    @on(Loaded)
    def show(self, message: Loaded) -> None:
        view = self.view = message.view
        listing = self.query_one("#experiments", DataTable)
        rows = [
            (str(e["id"]), e["created_at"][:16], e["status"], f"{e['cells_done']}/{e['cells']}",
             e["name"])
            for e in view.listing
        ]  # fmt: skip
        if [tuple(listing.get_row_at(i)) for i in range(listing.row_count)] != rows:
            listing.clear()
            for row in rows:
                listing.add_row(*row, key=row[0])
        self.query_one("#experiment-progress", ProgressBar).update(
            total=max(1, view.total), progress=view.done
        )
        cells = self.query_one("#experiment-cells", DataTable)
        cells.clear(columns=True)
        if view.table:
            cells.add_columns(*view.table[0])
            for cell_row in view.table:
                cells.add_row(*cell_row.values())
        self.query_one("#experiment-plot", Static).update("\n".join(self.plot_lines(view)))

    @staticmethod
    def plot_lines(view: ExperimentView) -> list[str]:
        """A bar plot per speed column (tokens/s per cell)."""
        lines: list[str] = []
        if not view.table:
            return ["no experiments yet: llcuda experiment run FILE"]
        for col in [c for c in view.table[0] if c.endswith(" t/s")]:
            items = [(r["cell"], float(r[col])) for r in view.table if r[col] != "-"]
            if items:
                lines += [col, *bar_lines(items), ""]
        return lines

    @on(DataTable.RowSelected, "#experiments")
    def pick(self, event: DataTable.RowSelected) -> None:
        self.selected = int(str(event.row_key.value))
        self.load()
