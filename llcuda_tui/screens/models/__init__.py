"""The Models screen: the screen (``screen.py``: the store table, the detail pane, the
Hugging Face pane, their keys and workers), the detail and disk lines' text (``detail.py``),
what the listing thread gathers beside the store (``listing.py``: fits here and on each
worker, the workers' models, the team store), the store actions' work and words
(``actions.py``) and the Hugging Face pane as data (``hub.py``); the layout is
``models.tcss``."""

from __future__ import annotations

from llcuda_tui.screens.models.screen import ModelsScreen

__all__ = ["ModelsScreen"]
