"""The app as a whole: screens switch by keys and the palette; missing data is explained."""

from __future__ import annotations

import pytest

from llcuda_tui.core.config import Settings
from llcuda_tui.screens.bench import BenchScreen
from llcuda_tui.screens.chat import ChatScreen
from llcuda_tui.screens.gpu import GpuScreen
from llcuda_tui.screens.models import ModelsScreen
from tests.tui.conftest import SIZE, make_app, wait_for

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
        await pilot.press("ctrl+p")
        await pilot.pause()
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


async def test_no_gpu_is_a_clear_message_and_the_rest_works(settings: Settings) -> None:
    app = make_app(settings)
    async with app.run_test(size=SIZE) as pilot:
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
