"""The Chat screen: the screen (``screen.py``: renders a core ``ChatSession`` and calls it),
the model bar (``model_bar.py``: picker and load settings), the transcript
(``transcript.py``: the turns, and the reply while it streams) and the conversation settings
dialog (``settings_dialog.py``); the layout is ``chat.tcss``."""

from __future__ import annotations

from llcuda_tui.screens.chat.screen import ChatScreen
from llcuda_tui.screens.chat.transcript import DRAIN_HZ

__all__ = ["DRAIN_HZ", "ChatScreen"]
