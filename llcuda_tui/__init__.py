"""llcuda-tui: a terminal workbench for local GGUF LLMs on NVIDIA GPUs."""

from __future__ import annotations

__version__ = "0.1.0"
