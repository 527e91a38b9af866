"""Path completion for an Input: the completion shows greyed after the cursor, Right (or End)
takes it (Textual's ``Suggester``; the completing itself is core's ``complete_path``)."""

from __future__ import annotations

from textual.suggester import Suggester

from llcuda_tui.core.files import complete_path


class PathSuggester(Suggester):
    """Completes file system paths: directories, and files with one of ``suffixes``."""

    def __init__(self, suffixes: tuple[str, ...] = ()) -> None:
        # not cached: the directory can change while the dialog is open
        super().__init__(use_cache=False, case_sensitive=True)
        self.suffixes = suffixes

    async def get_suggestion(self, value: str) -> str | None:
        return complete_path(value, self.suffixes)
