"""Copy the turn you choose, not only the last reply, and export without overwriting
(issue #16): Tab into the transcript, Up/Down pick a turn, Ctrl+Y copies it; Ctrl+S twice
writes two files."""

from __future__ import annotations

import pytest

from llcuda_tui.core.config import Settings
from llcuda_tui.screens.chat import ChatScreen
from llcuda_tui.widgets import ChatMessage
from tests.tui.conftest import SIZE, make_app, notices, wait_for
from tests.tui.test_chat import focused

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]

TURNS = [
    ("user", "Name a color."),
    ("assistant", "Blue."),
    ("user", "Name a fruit."),
    ("assistant", "A pear."),
]


async def test_up_and_down_pick_the_turn_that_ctrl_y_copies(settings: Settings) -> None:
    app = make_app(settings)
    conv = app.conversations.create()
    for role, text in TURNS:
        app.conversations.add_message(conv.id, role, text)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen), what="chat screen")
        chat = app.screen
        await wait_for(pilot, lambda: len(chat.query(ChatMessage)) == 4, what="four turns")
        turns = list(chat.query(ChatMessage))
        await focused(pilot, turns[3], "the last reply")
        await pilot.press("up", "up")
        await wait_for(pilot, lambda: app.focused is turns[1], 10, "the first reply focused")
        await pilot.press("ctrl+y")
        assert app.clipboard == "Blue."
        await pilot.press("up", "up")  # the first turn stays put at the top
        await wait_for(pilot, lambda: app.focused is turns[0], 10, "the first turn focused")
        await pilot.press("ctrl+y")
        assert app.clipboard == "Name a color."
        await pilot.press("down", "down")
        await wait_for(pilot, lambda: app.focused is turns[2], 10, "the second turn focused")
        await pilot.press("ctrl+y")
        assert app.clipboard == "Name a fruit."
        # from the message box: the last reply, and the notice says how to pick another
        await focused(pilot, chat.prompt)
        await pilot.press("ctrl+y")
        assert app.clipboard == "A pear."
        assert any("focus a turn" in n for n in notices(app))


async def test_exporting_twice_keeps_the_first_file(settings: Settings) -> None:
    app = make_app(settings)
    conv = app.conversations.create()
    for role, text in TURNS:
        app.conversations.add_message(conv.id, role, text)
    exports = settings.paths.data_dir / "exports"
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen), what="chat screen")
        chat = app.screen
        await focused(pilot, chat.prompt)
        await pilot.press("ctrl+s")
        first = exports / f"conversation-{conv.id}.md"
        await wait_for(pilot, first.exists, 10, "the first export")
        first.write_text("edited by hand\n")
        await pilot.press("ctrl+s")
        second = exports / f"conversation-{conv.id}-2.md"
        await wait_for(pilot, second.exists, 10, "the second export")
        assert first.read_text() == "edited by hand\n"
        assert "## User\n\nName a fruit." in second.read_text()
        assert any(str(second) in n for n in notices(app))
