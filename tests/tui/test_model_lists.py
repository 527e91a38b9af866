"""One store, one list (issue #16): a model imported on the Models screen (F2) appears in the
Chat and Bench pickers when they are shown again, without a restart."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Input

from llcuda_tui.core.config import Settings
from llcuda_tui.screens.dialogs import TextPromptDialog
from tests.tui.conftest import SIZE, make_app, notices, wait_for
from tests.tui.test_chat import dialog, focused

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(120)]


async def test_a_model_imported_on_f2_appears_in_the_chat_and_bench_pickers(
    settings: Settings, smollm_path: Path, tiny_gguf: Path
) -> None:
    app = make_app(settings)
    async with app.run_test(size=SIZE) as pilot:
        chat = app.screen
        await wait_for(pilot, lambda: "smollm2-135m-instruct" in chat.choices, what="chat list")
        await pilot.press("f4")
        await wait_for(pilot, lambda: getattr(app.screen, "choices", None), what="bench list")
        bench = app.screen
        before = set(bench.choices)
        await pilot.press("f2")
        await wait_for(pilot, lambda: hasattr(app.screen, "entries"), what="models screen")
        models = app.screen
        await pilot.press("i")
        prompt = await dialog(pilot, app, TextPromptDialog)
        field = prompt.query_one(Input)
        field.value = str(tiny_gguf)
        await focused(pilot, field)
        await wait_for(pilot, lambda: field.value == str(tiny_gguf), 10, "the path typed")
        await pilot.press("enter")
        await wait_for(pilot, lambda: any("imported" in n for n in notices(app)), 30, "import")
        await wait_for(pilot, lambda: len(models.entries) == 1, 30, "the store relisted")
        (name,) = models.entries
        assert name not in before
        await pilot.press("f1")
        await wait_for(pilot, lambda: name in chat.choices, 30, f"{name} in the Chat picker")
        await pilot.press("f4")
        await wait_for(pilot, lambda: name in bench.choices, 30, f"{name} in the Bench picker")


async def test_the_starter_models_are_store_entries_from_the_first_run(
    settings: Settings, smollm_path: Path, gemma_path: Path
) -> None:
    """F2 said "The store is empty" on a fresh home while Chat listed and loaded the starter
    models: now they are store entries, listed the same on both screens."""
    from llcuda_tui.core.store import Store

    app = make_app(settings, adopt_starters=True, start_screen="models")
    starters = {"smollm2-135m-instruct", "gemma-3-270m"}
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: hasattr(app.screen, "entries"), what="models screen")
        models = app.screen
        await wait_for(pilot, lambda: starters <= set(models.entries), 90, "starters in F2")
        await pilot.press("f1")
        await wait_for(pilot, lambda: app.chat_screen is not None, what="chat screen")
        chat = app.chat_screen
        await wait_for(pilot, lambda: starters <= set(chat.choices), 30, "the chat list")
        assert {chat.choices[n].source for n in starters} == {"store"}
    # a starter the user deleted is not brought back at the next start
    Store.from_settings(settings).remove("gemma-3-270m")
    again = make_app(settings, adopt_starters=True, start_screen="models")
    async with again.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: not again.adopting_starters, 30, "the first-run check")
        await wait_for(pilot, lambda: "smollm2-135m-instruct" in app_entries(again), 30)
        assert "gemma-3-270m" not in app_entries(again)


def app_entries(app: object) -> set[str]:
    return set(getattr(getattr(app, "screen", None), "entries", {}) or {})
