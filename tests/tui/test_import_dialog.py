"""The Models screen's import dialog (issue #16): the path completes as it is typed, a path
that is not a file is refused in the dialog with the text kept, and an import that fails
later brings the dialog back with the path and the error."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, Label

from llcuda_tui.core.config import Settings
from llcuda_tui.core.files import complete_path
from llcuda_tui.screens.import_dialog import ImportDialog
from llcuda_tui.screens.models import ModelsScreen
from tests.tui.conftest import SIZE, make_app, notices, wait_for
from tests.tui.test_chat import dialog, focused

pytestmark = pytest.mark.timeout(90)


def error_of(box: ImportDialog) -> str:
    label = box.query_one("#import-error", Label)
    return str(label.render()) if label.display else ""


def test_complete_path(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "tiny-one.gguf").write_bytes(b"")
    (tmp_path / "models" / "tiny-two.gguf").write_bytes(b"")
    (tmp_path / "models" / "tiny-notes.txt").write_bytes(b"")
    (tmp_path / "models" / ".hidden.gguf").write_bytes(b"")
    base = str(tmp_path)
    assert complete_path(f"{base}/mo", (".gguf",)) == f"{base}/models/"
    assert complete_path(f"{base}/models/ti", (".gguf",)) == f"{base}/models/tiny-"
    assert complete_path(f"{base}/models/tiny-o", (".gguf",)) == f"{base}/models/tiny-one.gguf"
    assert complete_path(f"{base}/models/tiny-n", (".gguf",)) is None  # not a .gguf
    assert complete_path(f"{base}/models/", (".gguf",)) == f"{base}/models/tiny-"  # no dotfile
    assert complete_path(f"{base}/models/.h", (".gguf",)) == f"{base}/models/.hidden.gguf"
    assert complete_path(f"{base}/nowhere/x", (".gguf",)) is None
    assert complete_path("", (".gguf",)) is None


@pytest.mark.asyncio
async def test_the_import_dialog_completes_keeps_and_explains(
    settings: Settings, tiny_gguf: Path, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    shutil.copyfile(tiny_gguf, models / "tiny-one.gguf")
    (models / "broken.gguf").write_bytes(b"not a GGUF file at all")
    app = make_app(settings, start_screen="models")
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ModelsScreen), what="models screen")
        screen = app.screen
        table = screen.query_one("#store-table", DataTable)
        await focused(pilot, table)
        await pilot.press("i")
        box = await dialog(pilot, app, ImportDialog)
        assert isinstance(box, ImportDialog)
        field = box.query_one("#answer", Input)
        # a path that names nothing: refused here, the text stays to be corrected
        missing = str(models / "tiny-on.gguf")
        field.value = missing
        await focused(pilot, field)
        await pilot.press("enter")
        await wait_for(pilot, lambda: "no such file" in error_of(box), 10, "the refusal")
        assert app.screen is box and field.value == missing
        # completion: Right takes what the suggester offers
        field.value = str(models / "tiny-o")
        field.cursor_position = len(field.value)
        await wait_for(pilot, lambda: field._suggestion.endswith("tiny-one.gguf"), 10, "suggestion")
        await pilot.press("right")
        await wait_for(pilot, lambda: field.value == str(models / "tiny-one.gguf"), 10, "completed")
        await pilot.press("enter")
        await wait_for(pilot, lambda: any("imported" in n for n in notices(app)), 30, "import")
        await wait_for(pilot, lambda: table.row_count == 1, 30, "the store relisted")
        # an import that fails in the store: the dialog comes back with the path and why
        await focused(pilot, table)
        await pilot.press("i")
        box = await dialog(pilot, app, ImportDialog)
        field = box.query_one("#answer", Input)
        field.value = str(models / "broken.gguf")
        await focused(pilot, field)
        await pilot.press("enter")

        def reopened() -> bool:
            again = app.screen
            return isinstance(again, ImportDialog) and again is not box and bool(error_of(again))

        await wait_for(pilot, reopened, 30, "the dialog back with the error")
        again = app.screen
        assert isinstance(again, ImportDialog)
        assert again.query_one("#answer", Input).value == str(models / "broken.gguf")
        assert table.row_count == 1
