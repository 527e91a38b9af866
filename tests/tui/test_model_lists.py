"""One store, one list (issue #16): a model imported or deleted on the Models screen (F2)
appears in or disappears from the Chat and Bench pickers without a restart (the pickers
themselves, not only the screens' lists), and a relist keeps what was picked."""

from __future__ import annotations

import fcntl
import hashlib
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import DataTable, Input, Select

from llcuda_tui.core.config import Paths, Settings
from llcuda_tui.core.store import Store
from llcuda_tui.screens.dialogs import ConfirmDialog, TextPromptDialog
from tests.tui.conftest import SIZE, make_app, notices, wait_for
from tests.tui.test_chat import dialog, focused

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(120)]


def offered(screen: Any, select_id: str) -> list[str]:
    """The model names a picker offers (what the user can pick, not the screen's dict)."""
    select = screen.query_one(select_id, Select)
    return [str(v) for _, v in select._options if v is not Select.NULL]


def picked(screen: Any, select_id: str) -> object:
    return screen.query_one(select_id, Select).value


async def import_on_f2(pilot: Any, app: Any, path: Path) -> Any:
    """On the Models screen: press i, type ``path``, Enter (the import then runs); the screen."""
    models = app.screen
    await pilot.press("i")
    prompt = await dialog(pilot, app, TextPromptDialog)
    field = prompt.query_one(Input)
    field.value = str(path)
    await focused(pilot, field)
    await wait_for(pilot, lambda: field.value == str(path), 10, "the path typed")
    await pilot.press("enter")
    await wait_for(pilot, lambda: app.screen is models, 10, "the dialog closed")
    return models


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
        models = await import_on_f2(pilot, app, tiny_gguf)
        await wait_for(pilot, lambda: any("imported" in n for n in notices(app)), 30, "import")
        await wait_for(pilot, lambda: len(models.entries) == 1, 30, "the store relisted")
        (name,) = models.entries
        assert name not in before
        await pilot.press("f1")
        await wait_for(
            pilot, lambda: name in offered(chat, "#model"), 30, f"{name} in the Chat picker"
        )
        await pilot.press("f4")
        await wait_for(
            pilot, lambda: name in offered(bench, "#bench-model"), 30, f"{name} in the Bench picker"
        )


async def test_a_model_deleted_on_f2_is_gone_from_the_chat_and_bench_pickers(
    settings: Settings, smollm_path: Path, tiny_gguf: Path
) -> None:
    """Both pickers had picked the model deleted on F2: it is gone from both, and neither
    still has it picked (Load or Run would have failed on a missing file)."""
    store = Store(Paths.from_env())
    store.import_path(tiny_gguf, name="tiny-keep")
    store.import_path(tiny_gguf, name="tiny-gone")
    app = make_app(settings)
    async with app.run_test(size=SIZE) as pilot:
        chat = app.screen
        await wait_for(pilot, lambda: "tiny-gone" in offered(chat, "#model"), what="chat list")
        chat.bar.pick("tiny-gone")
        await wait_for(pilot, lambda: picked(chat, "#model") == "tiny-gone", 10, "chat pick")
        await pilot.press("f4")
        await wait_for(pilot, lambda: getattr(app.screen, "choices", None), what="bench list")
        bench = app.screen
        await wait_for(pilot, lambda: "tiny-gone" in offered(bench, "#bench-model"), 30)
        bench.query_one("#bench-model", Select).value = "tiny-gone"
        await pilot.press("f2")
        await wait_for(pilot, lambda: hasattr(app.screen, "entries"), what="models screen")
        models = app.screen
        await wait_for(pilot, lambda: set(models.entries) == {"tiny-keep", "tiny-gone"}, 30)
        table = models.query_one("#store-table", DataTable)
        table.focus()
        table.move_cursor(row=table.get_row_index("tiny-gone"))
        await wait_for(pilot, lambda: models.selected_name() == "tiny-gone", 10, "the row")
        await pilot.press("delete")
        await dialog(pilot, app, ConfirmDialog)
        await pilot.press("y")
        await wait_for(pilot, lambda: set(models.entries) == {"tiny-keep"}, 30, "deleted")
        await pilot.press("f1")
        await wait_for(
            pilot, lambda: "tiny-gone" not in offered(chat, "#model"), 30, "gone from Chat"
        )
        assert "tiny-keep" in offered(chat, "#model")
        assert "tiny-gone" not in chat.choices
        assert picked(chat, "#model") != "tiny-gone"
        await pilot.press("f4")
        await wait_for(
            pilot, lambda: "tiny-gone" not in offered(bench, "#bench-model"), 30, "gone from Bench"
        )
        assert "tiny-keep" in offered(bench, "#bench-model")
        assert "tiny-gone" not in bench.choices
        assert picked(bench, "#bench-model") != "tiny-gone"


async def test_the_bench_pick_survives_a_relist(
    settings: Settings, smollm_path: Path, tiny_gguf: Path, tmp_path: Path
) -> None:
    """Bench relists when the store changed on F2: the model picked there stays picked (it
    was reset to the default model, so Run would benchmark another one)."""
    Store(Paths.from_env()).import_path(tiny_gguf, name="tiny-own")
    from tests.gguf_factory import write_tiny_llama

    other = write_tiny_llama(tmp_path / "tiny-new.gguf", seed=1)  # another blob, another entry
    app = make_app(settings, start_screen="bench")
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: getattr(app.screen, "choices", None), what="bench list")
        bench = app.screen
        await wait_for(pilot, lambda: "smollm2-135m-instruct" in offered(bench, "#bench-model"))
        assert picked(bench, "#bench-model") == "tiny-own"  # the default: an own model
        bench.query_one("#bench-model", Select).value = "smollm2-135m-instruct"
        await pilot.press("f2")
        await wait_for(pilot, lambda: hasattr(app.screen, "entries"), what="models screen")
        models = await import_on_f2(pilot, app, other)
        await wait_for(pilot, lambda: "tiny-new" in models.entries, 30, "imported")
        await pilot.press("f4")
        await wait_for(pilot, lambda: "tiny-new" in offered(bench, "#bench-model"), 30)
        assert picked(bench, "#bench-model") == "smollm2-135m-instruct"


async def test_an_import_that_ends_while_chat_is_shown_relists_its_picker(
    settings: Settings, smollm_path: Path, tiny_gguf: Path
) -> None:
    """The user starts an import on F2 and goes back to Chat before it ends: the model
    appears there when the import ends (the screens relisted only when shown again, so it
    stayed missing until the next F2 and F1)."""
    sha256 = hashlib.sha256(tiny_gguf.read_bytes()).hexdigest()
    store = Store(Paths.from_env())
    store.ensure()
    lock_path = store.layout.lock(sha256)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    app = make_app(settings)
    with lock_path.open("a") as lock:
        # the import waits for this blob's lock (publish_blob) until the test lets go of it
        fcntl.flock(lock, fcntl.LOCK_EX)
        async with app.run_test(size=SIZE) as pilot:
            chat = app.screen
            await wait_for(pilot, lambda: "smollm2-135m-instruct" in chat.choices, 30, "list")
            await pilot.press("f2")
            await wait_for(pilot, lambda: hasattr(app.screen, "entries"), what="models screen")
            models = await import_on_f2(pilot, app, tiny_gguf)
            await wait_for(pilot, lambda: models.importing, 10, "the import running")
            await pilot.press("f1")
            await wait_for(pilot, lambda: app.screen is chat, 10, "the Chat screen")
            await pilot.pause()
            assert "tiny-llama" not in chat.choices
            fcntl.flock(lock, fcntl.LOCK_UN)
            await wait_for(pilot, lambda: not models.importing, 30, "the import done")
            await wait_for(
                pilot, lambda: "tiny-llama" in offered(chat, "#model"), 30, "in the Chat picker"
            )


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
