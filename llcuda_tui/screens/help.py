"""The keys of every screen (?), built from the same ``BINDINGS`` the footers and the
command palette show: the app's, each screen's, and the own keys of the areas a screen names
in ``KEY_AREAS`` (the message box's Enter and Ctrl+J, not the 30 text-editing keys it inherits
from ``TextArea``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from llcuda_tui.widgets import KeyFooter

if TYPE_CHECKING:
    from textual.app import App
    from textual.dom import DOMNode

SCREENS = (
    ("chat", "Chat (F1)", "llcuda_tui.screens.chat", "ChatScreen"),
    ("models", "Models (F2)", "llcuda_tui.screens.models", "ModelsScreen"),
    ("gpu", "GPU (F3)", "llcuda_tui.screens.gpu", "GpuScreen"),
    ("bench", "Benchmark (F4)", "llcuda_tui.screens.bench", "BenchScreen"),
)


@dataclass(frozen=True)
class KeyRow:
    """One key as the help screen lists it."""

    key: str
    """As the footer shows it (``^n``, ``esc``, ``?``)."""
    what: str
    more: str = ""


def own_bindings(node_type: type[DOMNode]) -> list[Binding]:
    """The bindings ``node_type`` itself declares (not those it inherits)."""
    declared: Iterable[BindingType] = vars(node_type).get("BINDINGS", ())
    return list(Binding.make_bindings(declared))


def key_rows(app: App[Any], bindings: Iterable[Binding]) -> list[KeyRow]:
    """A row per binding with a description, keys that share an action on one row."""
    rows: dict[str, KeyRow] = {}
    for b in bindings:
        if not b.description:
            continue
        key = app.get_key_display(b)
        found = rows.get(b.action)
        if found is None:
            rows[b.action] = KeyRow(key, b.description, b.tooltip)
        elif key not in found.key.split(" / "):
            rows[b.action] = KeyRow(f"{found.key} / {key}", found.what, found.more)
    return list(rows.values())


def sections(app: App[Any], first: str | None = None) -> list[tuple[str, list[KeyRow]]]:
    """(title, rows) for the app, then each screen and its areas (``first``'s before the
    others). Imports the screens' modules (the help screen is shown on demand)."""
    import importlib

    palette = KeyRow(
        app.get_key_display(Binding(app.COMMAND_PALETTE_BINDING, "command_palette")),
        "Command palette",
        "every titled command of the app and this screen, by name",
    )
    everywhere = [*key_rows(app, own_bindings(type(app))), palette]
    out = [("Everywhere", everywhere)]
    order = sorted(SCREENS, key=lambda s: s[0] != first)
    for _mode, title, module, name in order:
        screen_type = getattr(importlib.import_module(module), name)
        out.append((title, key_rows(app, own_bindings(screen_type))))
        areas: dict[str, list[Binding]] = {}
        for area, widget_type in getattr(screen_type, "KEY_AREAS", ()):
            areas.setdefault(area, []).extend(own_bindings(widget_type))
        for area, bindings in areas.items():
            rows = key_rows(app, bindings)
            if rows:
                out.append((f"{title.split(' (')[0]} · {area}", rows))
    return out


def render_section(rows: list[KeyRow]) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", min_width=8, no_wrap=True)
    table.add_column(min_width=16, no_wrap=True)
    table.add_column(style="dim")
    for row in rows:
        table.add_row(row.key, row.what, row.more)
    return table


class HelpScreen(ModalScreen[None]):
    """Every key by screen; Esc (or ?) closes."""

    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > Vertical {
        width: 100; max-width: 100%; height: 1fr; max-height: 100%;
        border: thick $primary; background: $surface; padding: 0 1;
    }
    HelpScreen #help-keys { height: 1fr; }
    HelpScreen .help-title { text-style: bold; color: $accent; margin-top: 1; }
    HelpScreen .hint { padding: 0; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss", "Close"),
        Binding("question_mark", "dismiss", "Close", key_display="?", show=False),
    ]

    def __init__(self, first: str | None = None) -> None:
        super().__init__()
        self.first = first
        self.sections = sections(self.app, first)
        """(title, rows) as shown."""

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(
                "Keys by screen. The footer shows the focused area's and the screen's; in a "
                "text field letters are typed (Tab leaves it); Ctrl+P finds a command by name.",
                classes="hint",
                markup=False,
            )
            with VerticalScroll(id="help-keys"):
                for title, rows in self.sections:
                    yield Static(title, classes="help-title", markup=False)
                    yield Static(render_section(rows))
        yield KeyFooter(app_keys=False)

    def on_mount(self) -> None:
        self.query_one("#help-keys").focus()  # arrows and PgUp/PgDn scroll it
