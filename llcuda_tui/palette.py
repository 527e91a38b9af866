"""Key bindings that are also command palette entries.

A screen's ``BINDINGS`` (and the app's) is the one list of what can be done there: the footer
shows each binding's ``description``, the keys screen (?, ``screens/help.py``) its ``tooltip``
too, and the command palette (Ctrl+P) offers every :class:`PaletteBinding` under its
``title``. A command that should be in the palette gets a title in that list, not an entry in
a second one. The list is in order of use: where the footer has no room for every key (under
100 columns) it leaves out the last ones first.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.widget import Widget


@dataclass(frozen=True)
class PaletteBinding(Binding):
    """A :class:`Binding` that the command palette offers as ``title``; its ``tooltip`` is
    the palette's help line (and the footer's tooltip)."""

    title: str = ""


def palette_commands(
    app: App[Any], node: App[Any] | Widget, bindings: Iterable[BindingType]
) -> Iterator[SystemCommand]:
    """A palette command per :class:`PaletteBinding` in ``bindings`` (in their order), running
    the binding's action on ``node`` as its key would; the help line names the key."""
    for binding in bindings:
        if isinstance(binding, PaletteBinding) and binding.title:
            run = partial(app.run_action, binding.action, node)
            yield SystemCommand(binding.title, f"{binding.tooltip} ({binding.key})", run)
