"""Keys and layout (#16): 80x24 is usable on every screen (the footer keeps F1-F4, the
pickers show names, the Bench fields their values), ? lists every screen's keys, the focus
is always visible, destructive dialogs start on No, Enter saves the chat settings, and
Copy/Export/Rename/Search/Delete are in the footer of their area and in the palette.

Keys go to widgets that are mounted, filled and focused; the tests wait on state."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from rich.cells import cell_len
from textual.widget import Widget
from textual.widgets import Button, DataTable, Footer, Input, Select

from llcuda_tui.core.config import Paths, Settings
from llcuda_tui.core.store import Store
from llcuda_tui.screens.bench import BenchScreen
from llcuda_tui.screens.chat import ChatScreen
from llcuda_tui.screens.chat.settings_dialog import ChatSettingsDialog
from llcuda_tui.screens.dialogs import ConfirmDialog
from llcuda_tui.screens.gpu import GpuScreen
from llcuda_tui.screens.help import HelpScreen
from llcuda_tui.screens.models import ModelsScreen
from llcuda_tui.widgets import ChatMessage, ConversationList, PromptArea
from tests.tui.conftest import SIZE, make_app, notices, wait_for

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(120)]
SMALL = (80, 24)
SCREENS = (("f1", ChatScreen), ("f2", ModelsScreen), ("f3", GpuScreen), ("f4", BenchScreen))


def footer_keys(app: Any) -> dict[str, Widget]:
    """The keys the screen's footer shows, by key."""
    footer = app.screen.query_one(Footer)
    return {k.key: k for k in footer.query("FooterKey")}


def visible_text(app: Any, widget: Widget) -> str:
    """The text the terminal shows in ``widget``'s region, a line per row."""
    return "\n".join("".join(s.text for s in row) for row in region_look(app, widget))


def region_look(app: Any, widget: Widget) -> list[list[Any]]:
    """What the terminal shows in ``widget``'s region: text and style of each cell run."""
    r = widget.region
    strips = app.screen._compositor.render_strips()
    return [list(strip.crop(r.x, r.right)) for strip in strips[r.y : r.bottom]]


async def test_at_80x24_every_footer_keeps_f1_to_f4(settings: Settings) -> None:
    """80x24 cut F1-F4 off the Chat, Models and Bench footers (they came after the screen's
    keys); after a resize too, and no key overlaps another or the palette's."""
    app = make_app(settings)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen), what="chat screen")
        await wait_for(pilot, lambda: "ctrl+r" in footer_keys(app), what="footer keys")
        await pilot.resize_terminal(*SMALL)
        for key, screen in SCREENS:
            await pilot.press(key)
            await wait_for(pilot, lambda s=screen: isinstance(app.screen, s), what=str(screen))
            await wait_for(
                pilot,
                lambda: {"f1", "f2", "f3", "f4"} <= footer_keys(app).keys(),
                what=f"F1-F4 in the footer of {screen.__name__}",
            )
            await pilot.pause()
            keys = footer_keys(app)
            spans = sorted((k.region.x, k.region.right) for k in keys.values())
            assert all(right <= SMALL[0] for _, right in spans), (screen, spans)
            assert all(a[1] <= b[0] for a, b in pairwise(spans)), spans
            for f in ("f1", "f2", "f3", "f4"):
                assert keys[f].region.width > 0, (screen, f)


async def test_at_80x24_the_pickers_show_the_model_names(settings: Settings) -> None:
    """The Chat picker showed "g… ▼" and the Bench picker wrapped the name on two lines."""
    app = make_app(settings)
    async with app.run_test(size=SMALL) as pilot:
        chat = app.screen
        await wait_for(pilot, lambda: chat.bar.picked_name is not None, what="a picked model")
        await pilot.pause()
        name = chat.bar.picked_name
        label = chat.query_one("#model SelectCurrent #label")
        assert name in visible_text(app, label), visible_text(app, label)
        await pilot.press("f4")
        await wait_for(pilot, lambda: isinstance(app.screen, BenchScreen), what="bench")
        bench = app.screen
        await wait_for(pilot, lambda: bench.choices, what="bench models")
        select = bench.query_one("#bench-model", Select)
        await wait_for(pilot, lambda: isinstance(select.value, str), what="a picked model")
        await pilot.pause()
        label = bench.query_one("#bench-model SelectCurrent #label")
        assert str(select.value) in visible_text(app, label), visible_text(app, label)
        assert label.region.height == 1  # one line, not the name broken in two


async def test_at_80x24_the_bench_fields_show_their_values(settings: Settings) -> None:
    """Every Bench field was blank at 80x24: the labels beside them took the room."""
    app = make_app(settings, start_screen="bench")
    async with app.run_test(size=SMALL) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, BenchScreen), what="bench")
        await pilot.pause()
        fields = [f for f in app.screen.query("#bench-form Input").results(Input) if f.display]
        assert [f.id for f in fields] == ["n-prompt", "n-gen", "reps", "bench-ngl", "bench-batch"]
        for field in fields:
            shown = visible_text(app, field)
            assert field.value in shown, (field.id, shown)
            assert field.border_title, field.id  # what the field is, in its top border
            assert field.content_region.width >= cell_len(field.value) + 1, field.id


async def test_question_mark_lists_every_screens_keys_and_the_palette_opens_it(
    settings: Settings,
) -> None:
    app = make_app(settings, start_screen="models")
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ModelsScreen), what="models")
        await wait_for(pilot, lambda: app.focused is not None, what="focus")
        assert "question_mark" in footer_keys(app)
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), what="help screen")
        help_screen = app.screen
        await pilot.pause()
        titles = [title for title, _ in help_screen.sections]
        text = "\n".join(
            f"{r.key} {r.what} {r.more}" for _, rows in help_screen.sections for r in rows
        )
        assert "Everywhere" in visible_text(app, help_screen.query_one("#help-keys"))
        # the screen it was opened from comes first, after the app's own keys
        assert titles[:2] == ["Everywhere", "Models (F2)"], titles
        for expected in ("Chat (F1)", "GPU (F3)", "Benchmark (F4)", "Chat · message box"):
            assert expected in titles, titles
        for words in ("Pin/unpin", "Regenerate", "History span", "Compare", "New line"):
            assert words in text, words
        # the message box's own keys, not the text-editing keys it inherits from TextArea
        assert "Cursor up" not in text and "Delete word" not in text
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, ModelsScreen), what="closed")
        # from the Chat screen, where the message box takes a typed ?: the palette
        await pilot.press("f1")
        await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen), what="chat")
        commands = {c.title: c for c in app.get_system_commands(app.screen)}
        app.call_later(commands["Keys"].callback)
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), what="help via palette")
        assert app.screen.sections[1][0] == "Chat (F1)"


async def test_the_focus_is_always_visible_on_the_chat_screen(settings: Settings) -> None:
    """Every widget Tab reaches looks different focused: the message box (compact, no
    border) showed its focus only by its cursor, so not at all in the blink's off phase,
    and the transcript not at all."""
    app = make_app(settings)
    store = app.conversations
    conv = store.create(title="a saved chat")
    store.add_message(conv.id, "user", "hello")
    store.add_message(conv.id, "assistant", "hi there")
    async with app.run_test(size=SIZE) as pilot:
        chat = app.screen
        await wait_for(pilot, lambda: chat.query(ChatMessage), what="the open conversation")
        await wait_for(pilot, lambda: chat.choices, what="models listed")
        chain = [w for w in chat.focus_chain if w.id != "live"]
        assert chat.prompt in chain and chat.transcript in chain
        for widget in chain:
            chat.set_focus(None)
            await wait_for(pilot, lambda: chat.focused is None, what="no focus")
            await pilot.pause()
            blurred = region_look(app, widget)
            widget.focus()
            await wait_for(pilot, lambda w=widget: w.has_focus, what=f"focus on {widget}")
            if isinstance(widget, PromptArea):
                widget._pause_blink(visible=False)  # the cursor's blink-off phase
                widget.refresh()
            await pilot.pause()
            assert region_look(app, widget) != blurred, f"{widget} looks the same focused"


async def test_the_focus_is_always_visible_on_the_other_screens(
    settings: Settings, tiny_gguf: Path
) -> None:
    """The Models detail and the GPU panels (scrolling areas) did not show their focus."""
    Store(Paths.from_env()).import_path(tiny_gguf, name="tiny-llama")
    app = make_app(settings, start_screen="models")
    async with app.run_test(size=SIZE) as pilot:
        for key, screen_type in SCREENS[1:]:
            await pilot.press(key)
            await wait_for(pilot, lambda s=screen_type: isinstance(app.screen, s), what="screen")
            screen = app.screen
            await wait_for(pilot, lambda s=screen: s.focus_chain, what="focusable widgets")
            for widget in screen.focus_chain:
                screen.set_focus(None)
                await wait_for(pilot, lambda s=screen: s.focused is None, what="no focus")
                await pilot.pause()
                blurred = region_look(app, widget)
                widget.focus()
                await wait_for(pilot, lambda w=widget: w.has_focus, what=f"focus on {widget}")
                await pilot.pause()
                assert region_look(app, widget) != blurred, f"{widget} looks the same focused"


async def test_deleting_a_pinned_model_warns_and_starts_on_no(
    settings: Settings, tiny_gguf: Path
) -> None:
    store = Store(Paths.from_env())
    store.import_path(tiny_gguf, name="acme/tiny-llama:F32")
    store.set_pinned("acme/tiny-llama:F32", True)
    app = make_app(settings, start_screen="models")
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: screen.entries, what="store listing")
        table = screen.query_one("#store-table", DataTable)
        table.focus()
        await wait_for(pilot, lambda: table.has_focus, what="table focus")
        await pilot.press("delete")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog), what="dialog")
        dialog = app.screen
        await wait_for(pilot, lambda: dialog.focused is not None, what="dialog focus")
        assert dialog.focused is dialog.query_one("#no", Button)
        assert "pinned" in dialog.question
        assert {"escape", "y"} <= footer_keys(app).keys()  # the dialog's footer: its keys
        assert "f1" not in footer_keys(app)
        await pilot.press("enter")  # on No: nothing is deleted
        await wait_for(pilot, lambda: isinstance(app.screen, ModelsScreen), what="closed")
        await pilot.pause()
        assert [e.name for e in Store(Paths.from_env()).entries()] == ["acme/tiny-llama:F32"]
        # y: unpinned and deleted (the store alone refuses a pinned model)
        await pilot.press("delete")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog), what="dialog")
        await wait_for(pilot, lambda: app.screen.focused is not None, what="dialog focus")
        await pilot.press("y")
        await wait_for(pilot, lambda: not Store(Paths.from_env()).entries(), what="deleted")


async def test_deleting_a_conversation_starts_on_no(settings: Settings) -> None:
    app = make_app(settings)
    conv = app.conversations.create(title="keep me")
    async with app.run_test(size=SIZE) as pilot:
        chat = app.screen
        listing = chat.query_one(ConversationList)
        await wait_for(pilot, lambda: listing.highlighted_child is not None, what="listed")
        listing.focus()
        await wait_for(pilot, lambda: listing.has_focus, what="list focus")
        keys = footer_keys(app)
        assert {"delete", "r", "ctrl+f", "ctrl+s"} <= keys.keys(), keys.keys()
        await pilot.press("delete")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog), what="dialog")
        dialog = app.screen
        await wait_for(pilot, lambda: dialog.focused is not None, what="dialog focus")
        assert dialog.focused is dialog.query_one("#no", Button)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen), what="closed")
        assert [c.id for c in app.conversations.conversations()] == [conv.id]
        # y in the dialog deletes
        listing.focus()
        await wait_for(pilot, lambda: listing.has_focus, what="list focus")
        await pilot.press("delete")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog), what="dialog")
        await wait_for(pilot, lambda: app.screen.focused is not None, what="dialog focus")
        await pilot.press("y")
        await wait_for(pilot, lambda: not app.conversations.conversations(), what="deleted")


async def test_enter_in_a_settings_field_saves_and_says_saved(settings: Settings) -> None:
    app = make_app(settings)
    async with app.run_test(size=SIZE) as pilot:
        chat = app.screen
        await wait_for(pilot, lambda: chat.prompt.has_focus, what="chat ready")
        await pilot.press("ctrl+o")
        await wait_for(pilot, lambda: isinstance(app.screen, ChatSettingsDialog), what="dialog")
        dialog = app.screen
        field = dialog.query_one("#f-temperature", Input)
        field.focus()
        await wait_for(pilot, lambda: field.has_focus, what="field focus")
        field.value = "0.25"
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen), what="dialog closed")
        assert chat.session.settings.temperature == 0.25
        await wait_for(pilot, lambda: any("saved" in n for n in notices(app)), what="saved")


async def test_copy_export_rename_search_delete_in_the_area_footer_and_the_palette(
    settings: Settings,
) -> None:
    app = make_app(settings)
    conv = app.conversations.create(title="a chat")
    app.conversations.add_message(conv.id, "user", "hello")
    app.conversations.add_message(conv.id, "assistant", "hi")
    async with app.run_test(size=SIZE) as pilot:
        chat = app.screen
        await wait_for(pilot, lambda: chat.query(ChatMessage), what="the conversation")
        message = chat.query(ChatMessage).last()
        message.focus()
        await wait_for(pilot, lambda: message.has_focus, what="a message focused")
        keys = footer_keys(app)
        assert keys["ctrl+y"].description == "Copy" and keys["ctrl+s"].description == "Export"
        titles = {c.title for c in app.get_system_commands(chat)}
        for title in (
            "Chat: Copy message",
            "Chat: Export conversation",
            "Chat: Rename conversation",
            "Chat: Search conversations",
            "Chat: Delete conversation",
        ):
            assert title in titles, title
        await pilot.press("f2")
        await wait_for(pilot, lambda: isinstance(app.screen, ModelsScreen), what="models")
        titles = {c.title for c in app.get_system_commands(app.screen)}
        assert "Models: Delete model" in titles and "Models: Verify model" in titles
        await pilot.press("f4")
        await wait_for(pilot, lambda: isinstance(app.screen, BenchScreen), what="bench")
        titles = {c.title for c in app.get_system_commands(app.screen)}
        assert "Bench: Export results" in titles and "Bench: Compare" in titles
