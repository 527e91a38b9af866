"""llcuda-tui: a terminal workbench for local GGUF LLMs on NVIDIA GPUs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llcuda_tui._preload import preload_before_numpy

if TYPE_CHECKING:
    from llcuda_tui.core.worker import InferenceClient as InferenceClient
    from llcuda_tui.core.worker import InferResult as InferResult

preload_before_numpy()  # libllama before numpy: see _preload.py

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """``InferenceClient`` / ``InferResult`` (the Python client of a worker, from
    :mod:`llcuda_tui.core.worker`), imported on first use (keeps ``import`` light)."""
    if name in ("InferenceClient", "InferResult"):
        from llcuda_tui.core import worker

        return getattr(worker, name)
    raise AttributeError(f"module 'llcuda_tui' has no attribute {name!r}")
