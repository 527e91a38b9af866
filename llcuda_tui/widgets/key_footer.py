"""Textual's ``Footer``, recomposed once for any number of binding changes before a refresh.

Textual's footer queues a full recompose (every key's widget removed and mounted again) each
time the screen's bindings change. Showing the Chat screen changes them four times before
its first frame (resumed twice, focused twice): four recomposes of all its keys, about 40 ms
of the UI thread each on a 2-core VM, where one gives the same footer. This one queues a
recompose only when none is queued yet; the queued one reads the bindings as they are when
it runs, so it shows the last change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.widgets import Footer

if TYPE_CHECKING:
    from textual.screen import Screen


class KeyFooter(Footer):
    """A drop-in ``Footer`` (same look, same CSS type name for ``Footer`` rules)."""

    _recompose_queued = False

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
        await super().recompose()
