"""The Models screen on a real store: table, detail with fit, pin, delete with confirmation,
import, verify, and Hugging Face (a local stand-in) with a pull that is cancelled and
resumed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input

from llcuda_tui.core.config import Paths, Settings
from llcuda_tui.core.store import Store
from llcuda_tui.screens.dialogs import ConfirmDialog, TextPromptDialog
from llcuda_tui.screens.models import ModelsScreen
from tests.core.hubserver import HubServer, write_gguf
from tests.tui.conftest import SIZE, make_app, wait_for

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(90)]
REPO = "acme/tiny-llama"


def text(widget) -> str:  # type: ignore[no-untyped-def]
    return str(widget.render())


def notes(app) -> list[str]:  # type: ignore[no-untyped-def]
    return [str(n.message) for n in app._notifications]


@pytest.fixture()
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    files = tmp_path / "hub-files"
    files.mkdir()
    model = write_gguf(files / "tiny-Q8_0.gguf", n_embd=128, n_ff=256, seed=21)[0]
    with HubServer() as srv:
        srv.add_repo(REPO, {"tiny-Q8_0.gguf": model, "README.md": b"# tiny\n"})
        monkeypatch.setenv("HF_ENDPOINT", srv.url)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
        for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "HF_HUB_CACHE"):
            monkeypatch.delenv(var, raising=False)
        yield srv


async def test_store_table_detail_pin_delete_import(
    settings: Settings, tiny_gguf: Path, tmp_path: Path
) -> None:
    Store(Paths.from_env()).import_path(tiny_gguf, name="tiny-llama")
    app = make_app(settings, start_screen="models")
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        assert isinstance(screen, ModelsScreen)
        table = screen.query_one("#store-table", DataTable)
        await wait_for(pilot, lambda: table.row_count == 1, what="store listing")
        assert table.get_row_at(0)[0] == "tiny-llama"
        detail = text(screen.query_one("#detail"))
        assert "arch" in detail and "llama" in detail and "fits" in detail
        assert "source          imported tiny-llama.gguf" in detail
        assert "in 1 model(s)" in text(screen.query_one("#du-line"))
        table.focus()
        await pilot.press("p")
        await wait_for(pilot, lambda: table.row_count and table.get_row_at(0)[4] == "pinned")
        # deleting a pinned model: the dialog says it is pinned (Esc keeps it)
        await pilot.press("delete")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        assert "It is pinned" in app.screen.question
        await wait_for(pilot, lambda: app.screen.focused is not None, what="dialog focus")
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, ModelsScreen), what="closed")
        assert Store(Paths.from_env()).entries()
        await pilot.press("p")
        await wait_for(pilot, lambda: table.row_count and table.get_row_at(0)[4] == "")
        await pilot.press("v")
        await wait_for(pilot, lambda: any(n.startswith("verified tiny-llama") for n in notes(app)))
        assert any("1 file(s), ok" in n for n in notes(app))
        await pilot.press("delete")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.press("y")
        await wait_for(pilot, lambda: table.row_count == 0, what="deleted")
        assert "The store is empty" in text(screen.query_one("#detail"))
        # import a local file through the dialog
        copy = tmp_path / "again.gguf"
        copy.write_bytes(tiny_gguf.read_bytes())
        await pilot.press("i")
        await wait_for(pilot, lambda: isinstance(app.screen, TextPromptDialog))
        app.screen.query_one(Input).value = str(copy)
        await pilot.press("enter")
        await wait_for(pilot, lambda: table.row_count == 1, what="imported")
        assert table.get_row_at(0)[0] == "again"


async def test_hub_list_pull_cancel_and_resume(settings: Settings, hub: HubServer) -> None:
    hub.bytes_per_s = 200_000
    app = make_app(settings, start_screen="models")
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        await pilot.press("h")
        for ch in REPO:
            await pilot.press(ch)
        await pilot.press("enter")
        files = screen.query_one("#hub-table", DataTable)
        await wait_for(pilot, lambda: files.row_count == 1, what="listing")
        assert files.get_row_at(0)[0] == "Q8_0" and files.get_row_at(0)[2] == "tiny-Q8_0.gguf"
        files.focus()
        await pilot.press("enter")
        await wait_for(
            pilot,
            lambda: screen.pull_job is not None and screen.pull_job.progress.done > 50_000,
            what="download",
        )
        await pilot.pause(0.3)
        assert "ETA" in text(screen.query_one("#pull-status"))
        await pilot.press("escape")
        await wait_for(pilot, lambda: screen.pull_job is None, what="cancel")
        assert "pull it again to resume" in text(screen.query_one("#pull-status"))
        await wait_for(
            pilot,
            lambda: files.row_count == 1 and "resumable" in str(files.get_row_at(0)[4]),
            what="resumable",
        )
        hub.bytes_per_s = 0
        files.focus()
        await pilot.press("enter")
        table = screen.query_one("#store-table", DataTable)
        await wait_for(pilot, lambda: table.row_count == 1, what="pulled")
        assert table.get_row_at(0)[0] == f"{REPO}:Q8_0"
        ranges = [r.headers.get("range") for r in hub.requests("GET", contains="tiny-Q8_0")]
        assert ranges[0] is None and ranges[-1] is not None and ranges[-1].startswith("bytes=")


async def test_a_hub_that_does_not_answer_says_what_to_check(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    with socket.socket() as sock:  # a port that nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    app = make_app(settings, start_screen="models")
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        screen.query_one("#repo", Input).value = REPO
        await pilot.click("#list-files")
        status = screen.query_one("#pull-status")
        await wait_for(pilot, lambda: "cannot reach" in text(status), 60, "the Hub's error")
        line = text(status)
        assert f"HF_ENDPOINT={url}" in line and "network" in line and "HF_HUB_OFFLINE" in line
        assert "\n" not in line and "Traceback" not in line


async def test_hub_offline_is_explained(settings: Settings, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    app = make_app(settings, start_screen="models")
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        screen.query_one("#repo", Input).value = REPO
        await pilot.click("#list-files")
        await wait_for(pilot, lambda: "HF_HUB_OFFLINE" in text(screen.query_one("#pull-status")))
