"""Speculative decoding from the Chat screen (issue #18): the load settings dialog (the model
bar's spec button) picks prompt lookup or a draft model; the choice reaches the engine process
at Load, the reply's run line says how many drafts were accepted, the choice is remembered in
config.toml, and a draft of another vocabulary fails the load in one line."""

from __future__ import annotations

import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Button, Input, Select

from llcuda_tui.core.config import Settings
from llcuda_tui.core.engine import ProcessEngine
from llcuda_tui.screens.chat import ChatScreen
from llcuda_tui.screens.chat.load_dialog import LoadSettingsDialog
from llcuda_tui.widgets import ChatMessage
from tests.tui.conftest import SIZE, make_app, notices, wait_for
from tests.tui.test_chat import chat_settings, dialog, focused, load_smollm, send

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(240)]

# a text to repeat: what prompt lookup drafts from (the continuation is in the prompt)
REPEAT = (
    "Repeat this text exactly:\n\nThe store keeps every model by the sha256 of its bytes. A pull "
    "hashes while it streams and publishes only what verifies.\n\nRepeated:\n\n"
)


async def choose_spec(pilot: Any, app: Any, mode: str, draft: str | None = None) -> None:
    """Open the load settings with the spec button, pick ``mode`` (and ``draft``), save."""
    chat = app.screen
    assert isinstance(chat, ChatScreen)
    await wait_for(pilot, lambda: "smollm2-135m-instruct" in chat.choices, what="choices")
    await pilot.click("#spec")
    box = await dialog(pilot, app, LoadSettingsDialog)
    box.query_one("#spec-mode", Select).value = mode
    if draft is not None:
        picker = box.query_one("#spec-draft", Select)
        await wait_for(pilot, lambda: not picker.disabled, 10, "the draft picker enabled")
        picker.value = draft
    box.query_one("#spec-draft-max", Input).value = "8"
    await focused(pilot, box.query_one("#spec-draft-max", Input))
    await pilot.press("enter")
    await wait_for(pilot, lambda: app.screen is chat, 10, "the dialog closed")


def saved_tui(settings: Settings) -> dict[str, Any]:
    cfg = settings.paths.config_file
    if not cfg.exists():
        return {}
    tui: dict[str, Any] = tomllib.loads(cfg.read_text(encoding="utf-8")).get("tui", {})
    return tui


async def test_prompt_lookup_reaches_the_engine_and_the_run_line_shows_accepted_drafts(
    settings: Settings, smollm_path: Path
) -> None:
    app = make_app(chat_settings(settings, max_tokens=40))
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen), what="chat screen")
        await choose_spec(pilot, app, "ngram")
        chat = app.screen
        assert isinstance(chat, ChatScreen)
        assert str(chat.query_one("#spec", Button).label) == "lookup"
        await wait_for(pilot, lambda: saved_tui(settings).get("speculative") == "ngram", 20)
        assert saved_tui(settings)["draft_max"] == 8
        chat = await load_smollm(pilot, app)
        engine = app.engine
        assert isinstance(engine, ProcessEngine)  # the settings crossed into its process
        spec = engine.config.speculative
        assert spec is not None and (spec.mode, spec.draft_max) == ("ngram", 8)
        assert "speculative: ngram" in str(chat.query_one("#engine-status").render())
        await send(pilot, chat, REPEAT)  # the conversation samples greedily (temperature 0)
        record = chat.session.last_record
        assert record is not None and record.spec_mode == "ngram"
        assert record.drafted_tokens > 0 and record.accepted_tokens > 0
        reply = [w for w in chat.query(ChatMessage) if w.role == "assistant"][-1]
        line = str(reply.query_one(".record").render())
        pct = round(100 * record.accepted_tokens / record.drafted_tokens)
        assert (
            f"ngram drafts {record.accepted_tokens}/{record.drafted_tokens} accepted ({pct} %)"
            in line
        ), line
        assert "drafts accepted" in str(chat.query_one("#engine-status").render())
        # a conversation that samples decodes without speculation, and the status says why
        sampled = replace(chat.session.settings, temperature=0.7, max_tokens=8)
        chat.session.update_settings("", sampled)
        await send(pilot, chat, "Say hi.")
        record = chat.session.last_record
        assert record is not None and record.drafted_tokens == 0 and not record.spec_mode
        status = str(chat.query_one("#engine-status").render())
        assert "no drafts: speculation runs at temperature 0 only" in status, status

    # remembered: the next start's button and load use it
    again = make_app(Settings.load(settings.paths))
    async with again.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(again.screen, ChatScreen), what="chat screen")
        chat = again.screen
        assert isinstance(chat, ChatScreen)
        assert str(chat.query_one("#spec", Button).label) == "lookup"
        assert (chat.bar.spec.mode, chat.bar.spec.draft_max) == ("ngram", 8)


async def test_a_draft_of_another_vocabulary_fails_the_load_in_one_line(
    settings: Settings, smollm_path: Path, gemma_path: Path
) -> None:
    app = make_app(chat_settings(settings))
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen), what="chat screen")
        chat = app.screen
        assert isinstance(chat, ChatScreen)
        await wait_for(pilot, lambda: "gemma-3-270m" in chat.choices, what="gemma listed")
        await choose_spec(pilot, app, "draft", "gemma-3-270m")
        assert str(chat.query_one("#spec", Button).label) == "draft"
        chat.bar.pick("smollm2-135m-instruct")
        await focused(pilot, chat.prompt)
        await pilot.press("ctrl+l")

        def status() -> str:
            return str(chat.query_one("#engine-status").render())

        await wait_for(pilot, lambda: status().startswith("load failed"), 120, "load failure")
        assert app.engine is None
        line = status()
        assert "cannot draft for this model" in line and "vocabulary" in line, line
        assert "\n" not in line and "Traceback" not in line
        assert any("cannot draft for this model" in n and "\n" not in n for n in notices(app))
        # the fit badge counted the draft model's memory
        badge = chat.bar.badges["smollm2-135m-instruct"]
        assert "after the draft model's" in badge.detail, badge.detail


async def test_at_80x24_the_spec_button_makes_room_and_f8_opens_the_load_settings(
    settings: Settings,
) -> None:
    app = make_app(settings)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen), what="chat screen")
        chat = app.screen
        assert isinstance(chat, ChatScreen)
        await wait_for(pilot, lambda: chat.bar.picked_name is not None, what="a picked model")
        assert not chat.query_one("#spec", Button).region  # hidden: the picker has the room
        await focused(pilot, chat.prompt)
        await pilot.press("f8")
        box = await dialog(pilot, app, LoadSettingsDialog)
        save = box.query_one("#spec-save", Button)
        assert save.region.bottom <= 24  # the whole dialog is on the screen
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is chat, 10, "the dialog closed")
        assert chat.bar.spec.mode == ""  # cancelled: nothing changed
