"""The app as a whole: screens switch by keys and the palette; missing data is explained."""

from __future__ import annotations

import pytest
from textual.command import CommandInput
from textual.widgets import Input

from llcuda_tui.core.config import Settings
from llcuda_tui.screens.bench import BenchScreen
from llcuda_tui.screens.chat import ChatScreen
from llcuda_tui.screens.dialogs import TextPromptDialog
from llcuda_tui.screens.gpu import GpuScreen
from llcuda_tui.screens.models import ModelsScreen
from tests.tui.conftest import SIZE, make_app, notices, wait_for

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]


async def test_function_keys_switch_between_the_four_screens(settings: Settings) -> None:
    app = make_app(settings)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen), what="chat screen")
        for key, screen in (
            ("f2", ModelsScreen),
            ("f3", GpuScreen),
            ("f4", BenchScreen),
            ("f1", ChatScreen),
            ("f3", GpuScreen),
        ):
            await pilot.press(key)
            await wait_for(pilot, lambda s=screen: isinstance(app.screen, s), what=str(screen))
        assert app.current_mode == "gpu"


async def test_command_palette_switches_screens(settings: Settings) -> None:
    app = make_app(settings)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen), what="chat screen")
        await pilot.press("ctrl+p")
        # keys typed before the palette's input has focus would go to the chat prompt
        await wait_for(pilot, lambda: isinstance(app.focused, CommandInput), what="palette input")
        for ch in "Benchmark screen":
            await pilot.press(ch if ch != " " else "space")
        await wait_for(
            pilot,
            lambda: (
                "Benchmark screen"
                in str(app.screen.query("CommandList").first().get_option_at_index(0).prompt)
            ),
            what="palette match",
        )
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, BenchScreen), what="bench screen")


async def test_palette_commands_are_the_titled_bindings(settings: Settings) -> None:
    """The palette offers the app's and the screen's bindings that have a palette title
    (help: what it does and its key); running one does what its key does."""
    app = make_app(settings)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen), what="chat screen")
        commands = {c.title: c for c in app.get_system_commands(app.screen)}
        for key, title in (("f1", "Chat"), ("f2", "Models"), ("f3", "GPU"), ("f4", "Benchmark")):
            assert commands[f"{title} screen"].help == f"Switch to the {title} screen ({key})"
        assert commands["Attach worker"].help.endswith("by URL (f5)")
        chat = [t for t in commands if t.startswith("Chat: ")]
        assert chat == [
            "Chat: New conversation",
            "Chat: Load model",
            "Chat: Regenerate",
            "Chat: Edit last turn",
            "Chat: Conversation settings",
            "Chat: Load settings",
            "Chat: Copy message",
            "Chat: Export conversation",
            "Chat: Rename conversation",
            "Chat: Search conversations",
            "Chat: Delete conversation",
            "Chat: Write a message",
        ]
        assert commands["Chat: New conversation"].help == "Start a new chat (ctrl+n)"
        assert commands["Keys"].help == "The keys of every screen (question_mark)"
        assert "Chat: Stop" not in commands  # Esc, a binding without a palette title
        app.call_later(commands["Models screen"].callback)  # as the palette runs a command
        await wait_for(pilot, lambda: isinstance(app.screen, ModelsScreen), what="models screen")
        assert not any(c.title.startswith("Chat: ") for c in app.get_system_commands(app.screen))


async def test_f5_attaches_a_worker_by_url(settings: Settings) -> None:
    app = make_app(settings)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen), what="chat screen")
        await pilot.press("f5")
        await wait_for(pilot, lambda: isinstance(app.screen, TextPromptDialog), what="dialog")
        dialog = app.screen
        answer = dialog.query_one("#answer", Input)
        await wait_for(pilot, lambda: app.focused is answer, what="URL field focused")
        answer.value = "ftp://nowhere"
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen), what="dialog closed")
        await wait_for(pilot, lambda: any("http://host:port" in n for n in notices(app)))
        assert app.worker_urls == []


async def test_no_gpu_is_a_clear_message_and_the_rest_works(settings: Settings) -> None:
    app = make_app(settings)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen), what="chat screen")
        await pilot.press("f3")
        await wait_for(pilot, lambda: app.screen.has_class("-no-gpu"), what="no-gpu state")
        message = str(app.screen.query_one("#no-gpu").render())
        assert "No GPU telemetry: no NVIDIA GPU found" in message
        assert "Driver Not Loaded" in message and "models run on the CPU" in message
        await pilot.press("f1")
        await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen))
        chat = app.screen
        await wait_for(pilot, lambda: chat.choices, what="model choices")
        assert "smollm2-135m-instruct" in chat.choices


async def test_attach_worker_with_a_bad_url_says_why(settings: Settings) -> None:
    app = make_app(settings)
    async with app.run_test(size=SIZE) as pilot:
        message, ok = app.attach_worker("ftp://nowhere")
        assert not ok and "http://host:port" in message
        message, ok = app.attach_worker("http://127.0.0.1:9")  # nothing listens on port 9
        assert ok and "connecting" in message
        await wait_for(
            pilot,
            lambda: any("127.0.0.1:9" in str(n.message) for n in app._notifications),
            what="error notice",
        )
        notes = [str(n.message) for n in app._notifications]
        assert any(n.startswith("worker http://127.0.0.1:9:") for n in notes), notes
        assert app.engine is None
