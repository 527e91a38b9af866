"""The Chat screen as a new user meets it (issue #16): a pasted multi-line prompt is sent
whole, the picked model survives a change of ctx, the message box has the focus after Load,
and a finished reply keeps its line breaks and its unfenced code.

Keys go to widgets that are mounted, filled and focused (``focused``), never after a fixed
time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from textual import events
from textual.app import App, ComposeResult
from textual.widgets import Input, Select
from textual.widgets._markdown import MarkdownFence, MarkdownParagraph

from llcuda_tui.core.config import Settings
from llcuda_tui.messages import ChoicesReady
from llcuda_tui.widgets import ChatMessage
from tests.tui.conftest import SIZE, make_app, wait_for
from tests.tui.test_chat import chat_settings, focused, load_smollm, streaming

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(120)]

PASTED = "Summarize this:\nRivers carry water to the sea.\nLakes hold it.\nClouds bring it back."


async def test_a_pasted_multi_line_prompt_is_sent_whole(
    settings: Settings, smollm_path: Path
) -> None:
    app = make_app(chat_settings(settings, max_tokens=4))
    async with app.run_test(size=SIZE) as pilot:
        chat = await load_smollm(pilot, app)
        prompt = chat.prompt
        await focused(pilot, prompt)
        app.post_message(events.Paste(PASTED))  # as the terminal sends it: to the app
        await wait_for(pilot, lambda: prompt.value == PASTED, 10, "paste")
        # Ctrl+J adds a line (Enter would send)
        await pilot.press("ctrl+j", "o", "k")
        await wait_for(pilot, lambda: prompt.value == PASTED + "\nok", 10, "a new line")
        # the box grew to show the lines (it was one line high)
        assert prompt.size.height >= 5
        await pilot.press("enter")
        await wait_for(pilot, lambda: chat.session.last_record is not None, 90, "the reply")
        await wait_for(pilot, lambda: not streaming(chat), 90, "reply end")
        conv = chat.session.conversation
        assert conv is not None
        user = app.conversations.messages(conv.id)[0]
        assert user.role == "user" and user.content == PASTED + "\nok"
        assert prompt.value == ""
        # a few lines, then it scrolls: twelve lines keep it at its cap, the cursor in view
        many = "\n".join(f"line {n}" for n in range(1, 13))
        app.post_message(events.Paste(many))
        await wait_for(pilot, lambda: prompt.value == many, 10, "the long paste")
        await wait_for(pilot, lambda: prompt.scroll_offset.y > 0, 10, "the box scrolled")
        assert prompt.size.height == prompt.styles.max_height.value  # type: ignore[union-attr]


async def test_changing_ctx_keeps_the_picked_model(
    settings: Settings, smollm_path: Path, gemma_path: Path
) -> None:
    listed: list[ChoicesReady] = []

    def hook(message: Any) -> None:
        if isinstance(message, ChoicesReady):
            listed.append(message)

    app = make_app(chat_settings(settings))
    async with app.run_test(size=SIZE, message_hook=hook) as pilot:
        chat = await load_smollm(pilot, app)
        gemma = next(name for name in chat.choices if name.startswith("gemma"))
        select = chat.query_one("#model", Select)
        select.value = gemma
        await wait_for(pilot, lambda: chat.bar.picked_name == gemma, 10, "gemma picked")
        before = len(listed)
        ctx = chat.query_one("#ctx", Input)
        ctx.value = "512"  # relists the models with their fit at the new context
        await wait_for(pilot, lambda: len(listed) > before, 30, "the models relisted")
        await pilot.pause()
        # the loaded model is smollm; the pick is still gemma, so Load loads gemma
        assert app.engine_choice is not None and app.engine_choice.name != gemma
        assert chat.bar.picked_name == gemma
        assert chat.bar.picked() is not None and chat.bar.picked().name == gemma


async def test_after_load_the_message_box_has_the_focus(
    settings: Settings, smollm_path: Path
) -> None:
    app = make_app(chat_settings(settings))
    async with app.run_test(size=SIZE) as pilot:
        chat = app.screen
        await wait_for(pilot, lambda: "smollm2-135m-instruct" in chat.choices, what="choices")
        select = chat.query_one("#model", Select)
        await focused(pilot, select)
        await pilot.press("ctrl+l")
        await wait_for(pilot, lambda: app.engine is not None, 60, "model load")
        await wait_for(pilot, lambda: chat.prompt.has_focus, 10, "focus on the message box")
        # from anywhere on the screen, Ctrl+E jumps back to it
        await focused(pilot, chat.query_one("#ctx", Input))
        await pilot.press("ctrl+e")
        await wait_for(pilot, lambda: chat.prompt.has_focus, 10, "Ctrl+E to the message box")


CODE = "Here it is:\ndef reverse_string(s):\n    return s[::-1]"
POEM = "Roses are red,\nviolets are blue,\nthis line stays third."
FENCED = "```python\nx = 1\n\ny = 2\n```"


class OneReply(App[None]):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def compose(self) -> ComposeResult:
        yield ChatMessage("assistant", self.text)


async def rendered(text: str) -> tuple[list[str], list[str]]:
    """The paragraphs and the code blocks of ``text`` as a finished reply shows them."""
    app = OneReply(text)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(
            pilot,
            lambda: bool(app.query(MarkdownParagraph)) or bool(app.query(MarkdownFence)),
            10,
            "the reply rendered",
        )
        paragraphs = [str(p.render()) for p in app.query(MarkdownParagraph)]
        fences = [f.code for f in app.query(MarkdownFence)]
    return paragraphs, fences


async def test_a_finished_reply_keeps_its_line_breaks_and_its_code() -> None:
    paragraphs, fences = await rendered(POEM)
    assert paragraphs == [POEM] and not fences
    # code without a fence keeps its lines and its indent
    paragraphs, fences = await rendered(CODE)
    assert fences == ["Here it is:\ndef reverse_string(s):\n    return s[::-1]"]
    # a fenced block passes through as it was, blank line and all
    paragraphs, fences = await rendered(FENCED)
    assert fences == ["x = 1\n\ny = 2"]
