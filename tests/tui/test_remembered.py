"""What the TUI remembers between runs (issue #16, defect 11): the theme chosen in the palette
(``[tui] theme`` in config.toml, written atomically) and, on reopening a conversation, the
preset its system prompt came from (the dialog showed '(custom)')."""

from __future__ import annotations

import tomllib

import pytest
from textual.widgets import Select, TextArea

from llcuda_tui.core.config import Settings
from llcuda_tui.core.conversations import BUILTIN_PRESETS
from llcuda_tui.screens.chat import ChatScreen
from llcuda_tui.screens.chat.settings_dialog import ChatSettingsDialog
from tests.tui.conftest import SIZE, make_app, notices, wait_for
from tests.tui.test_chat import dialog, focused

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]


def config_theme(settings: Settings) -> str | None:
    cfg = settings.paths.config_file
    if not cfg.exists():
        return None
    return tomllib.loads(cfg.read_text(encoding="utf-8")).get("tui", {}).get("theme")


async def test_the_chosen_theme_is_saved_and_restored_at_the_next_start(
    settings: Settings,
) -> None:
    settings.ensure_dirs()
    settings.paths.config_file.write_text("# mine\n[sampling]\ntemperature = 0.5\n")
    app = make_app(settings)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen), what="chat screen")
        assert app.theme != "nord"
        app.theme = "nord"  # what the palette's "Change theme" does
        await wait_for(pilot, lambda: config_theme(settings) == "nord", 20, "theme saved")
        assert app.settings.tui.theme == "nord"
    text = settings.paths.config_file.read_text()
    assert "# mine" in text and "temperature = 0.5" in text  # the rest of the file stays
    assert not list(settings.paths.config_dir.glob("*.tmp"))  # no temp file left behind

    again = make_app(Settings.load(settings.paths))
    async with again.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(again.screen, ChatScreen), what="chat screen")
        assert again.theme == "nord"


async def test_an_unknown_saved_theme_is_a_notice_and_the_default(settings: Settings) -> None:
    settings.ensure_dirs()
    settings.paths.config_file.write_text('[tui]\ntheme = "no-such-theme"\n')
    app = make_app(Settings.load(settings.paths))
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen), what="chat screen")
        await wait_for(pilot, lambda: any("no-such-theme" in n for n in notices(app)), 10)
        assert app.theme in app.available_themes
        assert config_theme(settings) == "no-such-theme"  # not rewritten unasked


async def test_a_reopened_conversation_shows_its_preset(settings: Settings) -> None:
    app = make_app(settings)
    conv = app.conversations.create("Short answers", system_prompt=BUILTIN_PRESETS["terse"])
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen), what="chat screen")
        chat = app.screen
        assert isinstance(chat, ChatScreen)
        await wait_for(
            pilot,
            lambda: (
                chat.session.conversation is not None and chat.session.conversation.id == conv.id
            ),
            what="the conversation open",
        )
        await focused(pilot, chat.prompt)
        await pilot.press("ctrl+o")
        box = await dialog(pilot, app, ChatSettingsDialog)
        preset = box.query_one("#preset", Select)
        assert preset.value == "terse"
        # typed away from the preset, the prompt is its own again
        system = box.query_one("#system", TextArea)
        system.text = "Answer in French."
        await wait_for(pilot, lambda: preset.value == Select.NULL, 10, "(custom)")
        system.text = BUILTIN_PRESETS["tutor"]
        await wait_for(pilot, lambda: preset.value == "tutor", 10, "the tutor preset")
