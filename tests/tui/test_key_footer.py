"""KeyFooter: one recompose for a burst of binding changes, and it shows the last of them."""

from __future__ import annotations

from typing import ClassVar

import pytest
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Static
from textual.widgets._footer import FooterKey

from llcuda_tui.widgets import KeyFooter

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]


class CountingFooter(KeyFooter):
    recomposes = 0

    async def recompose(self) -> None:
        type(self).recomposes += 1
        await super().recompose()


class Keys(App[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("f1", "noop", "One")]
    shown = True

    def compose(self) -> ComposeResult:
        yield Static("body")
        yield CountingFooter()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return self.shown if action == "noop" else True

    def action_noop(self) -> None:
        pass


def _keys(app: App[None]) -> list[str]:
    return [key.key for key in app.screen.query(FooterKey) if not key.has_class("-command-palette")]


async def test_a_burst_of_binding_changes_recomposes_once_and_shows_the_last() -> None:
    app = Keys()
    async with app.run_test(size=(80, 10)) as pilot:
        await pilot.pause()
        assert _keys(app) == ["f1"]
        before = CountingFooter.recomposes
        for shown in (False, True, False):  # Textual's Footer would recompose three times
            app.shown = shown
            app.screen.refresh_bindings()
        await pilot.pause()
        await pilot.pause()
        assert CountingFooter.recomposes == before + 1
        assert _keys(app) == []  # the last change: hidden
        app.shown = True
        app.screen.refresh_bindings()  # a later change is shown too
        await pilot.pause()
        await pilot.pause()
        assert _keys(app) == ["f1"]


async def test_a_binding_change_that_shows_the_same_keys_keeps_their_widgets() -> None:
    app = Keys()
    async with app.run_test(size=(80, 10)) as pilot:
        await pilot.pause()
        keys = list(app.screen.query(FooterKey))
        before = CountingFooter.recomposes
        app.screen.refresh_bindings()  # nothing the footer shows changed
        await pilot.pause()
        await pilot.pause()
        assert CountingFooter.recomposes == before + 1  # it was asked to
        assert list(app.screen.query(FooterKey)) == keys  # and kept every key as it was
        app.shown = False
        app.screen.refresh_bindings()
        await pilot.pause()
        await pilot.pause()
        assert _keys(app) == []  # a change is still shown
