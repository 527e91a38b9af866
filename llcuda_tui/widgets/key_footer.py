"""The footer of every screen and dialog: Textual's ``Footer``, fitted to the terminal.

Textual's footer lays the keys out in a row and cuts what passes the right edge; the app's
keys come last (the focused area's come first, then the screen's), so at 80 columns the Chat
screen lost F1–F4. This one, where the keys do not all fit, turns compact and keeps the app's
keys (F1–F4, ? for the keys of every screen), dropping the screen's last keys first: a
screen's ``BINDINGS`` list its most used keys first, and the help screen (?) lists them all.

It also recomposes once for any number of binding changes before a refresh. Textual's footer
queues a full recompose (every key's widget removed and mounted again) each time the screen's
bindings change; showing the Chat screen changes them four times before its first frame
(resumed twice, focused twice), about 40 ms of the UI thread each on a 2-core VM. This one
queues a recompose only when none is queued yet; the queued one reads the bindings as they are
when it runs, so it shows the last change.
"""

from __future__ import annotations

from rich.cells import cell_len
from textual import events
from textual.app import ComposeResult
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Footer

NARROW_WIDTH = 100
"""Below this many columns the footer is compact (the app's ``-narrow`` breakpoint)."""


def is_key(item: Widget) -> bool:
    """``item`` is one of the footer's keys (Textual's ``FooterKey``, a private class)."""
    return type(item).__name__ == "FooterKey"


def key_width(key: Widget, compact: bool) -> int:
    """The cells ``key`` (a FooterKey) takes in the footer, with its padding and margins."""
    display: str = getattr(key, "key_display", "")
    description: str = getattr(key, "description", "")
    text = cell_len(display) + (cell_len(description) + 1 if description else 0)
    if key.has_class("-command-palette"):  # its left border and padding
        return text + 1 if compact else text + 2
    return text + 1 if compact else text + 2  # measured: e.g. " esc Stop " / "esc Stop "


class KeyFooter(Footer):
    """Every key that fits; where they do not all fit, compact, the app's keys kept."""

    def __init__(self, *, app_keys: bool = True, id: str | None = None) -> None:
        """``app_keys``: show the app's keys (F1–F4…) after the screen's (a dialog's
        footer shows its own keys only)."""
        super().__init__(id=id)
        self.app_keys = app_keys
        self.dropped: list[str] = []
        """The keys left out at the last layout (what tests and the help screen read)."""
        self._laid_out_for = -1
        self._recompose_queued = False
        self._composed: tuple = ()
        """What the keys shown were made from (:meth:`_signature`)."""

    def bindings_changed(self, screen: Screen) -> None:
        if self._recompose_queued:
            return  # the queued recompose will show this change too
        super().bindings_changed(screen)
        # what Footer.bindings_changed checks before it queues one
        self._recompose_queued = bool(
            screen.app.app_focus and self.is_attached and screen is self.screen
        )

    async def recompose(self) -> None:
        self._recompose_queued = False
        if self.is_attached and self._signature() == self._composed:
            # most binding changes (focus moving, a check_action refresh) leave the keys as
            # they were: a recompose would remove and mount every key for nothing (five at
            # start-up, each ~40 widgets)
            return
        await super().recompose()

    def _signature(self) -> tuple:
        """The terminal width and every active binding as the footer shows it."""
        active = self.screen.active_bindings
        shown = tuple(
            (key, binding.action, binding.description, binding.show, enabled, tooltip,
             node is self.app)
            for key, (node, binding, enabled, tooltip) in active.items()
        )  # fmt: skip
        return (self.app.size.width, self.app_keys, shown)

    def compose(self) -> ComposeResult:
        items = list(super().compose())
        active = self.screen.active_bindings
        app = self.app

        def from_app(item: Widget) -> bool:
            if not is_key(item) or item.has_class("-command-palette"):
                return False
            found = active.get(getattr(item, "key", ""))
            return found is not None and found.node is app

        if not self.app_keys:
            items = [i for i in items if not from_app(i)]
        # Footer composes no keys until the screen's bindings are ready
        self._composed = self._signature() if self._bindings_ready else ()
        width = self._laid_out_for = app.size.width
        compact = width < NARROW_WIDTH or self._fits(items, False) > width
        self.set_reactive(Footer.compact, compact)
        self.set_class(compact, "-compact")
        for item in items:
            if is_key(item) and not item.has_class("-command-palette"):
                # what each key's compact watcher would do on mount (its data binding gives
                # the footer's value), done before: otherwise each of the ~40 keys restyles
                # itself once more as it mounts, half the style work of the Chat screen's
                # first frame (about 0.5 s of a loaded 2-core VM). The palette's key is not
                # bound to the footer's compact: it keeps its own.
                item.set_reactive(type(item).compact, compact)  # type: ignore[attr-defined]
                item.set_class(compact, "-compact", update=False)
        kept: list[Widget] = [i for i in items if from_app(i) or not is_key(i)]
        kept += [i for i in items if is_key(i) and i.has_class("-command-palette")]
        room = width - self._fits(kept, compact)
        self.dropped = []
        shown: set[int] = {id(i) for i in kept}
        for item in items:
            if id(item) in shown or not is_key(item):
                continue
            cost = key_width(item, compact)
            if cost <= room:
                room -= cost
                shown.add(id(item))
            else:
                room = -1  # keep the order: nothing after a dropped key
                self.dropped.append(getattr(item, "key", ""))
        yield from (i for i in items if id(i) in shown)

    @staticmethod
    def _fits(items: list[Widget], compact: bool) -> int:
        return sum(key_width(i, compact) for i in items if is_key(i))

    def on_resize(self, event: events.Resize) -> None:
        if self._bindings_ready and self.app.size.width != self._laid_out_for:
            self.call_after_refresh(self.recompose)
