"""llcuda-tui: a terminal workbench for local GGUF LLMs on NVIDIA GPUs."""

from __future__ import annotations

from llcuda_tui._preload import preload_llama

preload_llama()  # before anything imports numpy: see _preload.py

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """``InferenceClient`` / ``InferResult``, imported on first use (keeps ``import`` light)."""
    if name in ("InferenceClient", "InferResult"):
        from llcuda_tui import client

        return getattr(client, name)
    raise AttributeError(f"module 'llcuda_tui' has no attribute {name!r}")
