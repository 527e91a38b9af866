"""Long text wraps instead of being cut (issue #16): the over-context question in a
ConfirmDialog and a long note in the context meter, at 80x24."""

from __future__ import annotations

import pytest
from textual.app import App, ComposeResult
from textual.widgets import Label

from llcuda_tui.screens.dialogs import ConfirmDialog
from llcuda_tui.widgets import ContextMeter
from tests.tui.conftest import wait_for

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]

QUESTION = (
    "History + reply budget is 5,210 tokens; the context holds 4,096. Leave the oldest 3 "
    "turn(s) out of this request? They stay in the conversation."
)
NOTE = (
    "the worker counts no tokens (a plain OpenAI server): it trims or refuses an over-long "
    "request itself, so the meter cannot say how full the context is"
)


class MeterApp(App[None]):
    def compose(self) -> ComposeResult:
        yield ContextMeter()


async def test_the_over_context_question_wraps_inside_its_dialog() -> None:
    app = App[None]()
    async with app.run_test(size=(80, 24)) as pilot:
        app.push_screen(ConfirmDialog(QUESTION, yes="Leave out and send"))
        await wait_for(
            pilot,
            lambda: isinstance(app.screen, ConfirmDialog) and app.screen.focused is not None,
            10,
            "the dialog with its focus set",
        )
        label = app.screen.query_one(Label)
        await wait_for(pilot, lambda: label.size.height > 0, 10, "the dialog laid out")
        box = label.parent
        assert box is not None
        # inside the dialog's content area, on as many lines as it takes
        assert label.region.right <= box.content_region.right
        assert label.size.height >= 2
        lines = [strip.text.rstrip() for strip in label.render_lines(label.size.region)]
        assert " ".join(" ".join(lines).split()) == QUESTION


async def test_a_long_meter_note_wraps() -> None:
    app = MeterApp()
    async with app.run_test(size=(80, 24)) as pilot:
        meter = app.query_one(ContextMeter)
        meter.show_plan(None, NOTE)
        await wait_for(pilot, lambda: meter.size.height >= 2, 10, "the note on two lines")
        lines = [s.text.rstrip() for s in meter.render_lines(meter.size.region)]
        assert " ".join(" ".join(lines).split()) == f"context: {NOTE}"
