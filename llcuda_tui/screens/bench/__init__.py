"""The Benchmark screen: the screen (``screen.py``: layout, keys, the workers that run and
list), the form as data (``form.py``: choices, defaults, the spec and the estimate the typed
values make), the tables (``tables.py``: results, history and compare rows) and a run's
thread side (``run.py``: the progress it writes, where it runs)."""

from __future__ import annotations

from llcuda_tui.screens.bench.form import FORM_DEFAULTS, LOCAL
from llcuda_tui.screens.bench.screen import BenchScreen

__all__ = ["FORM_DEFAULTS", "LOCAL", "BenchScreen"]
