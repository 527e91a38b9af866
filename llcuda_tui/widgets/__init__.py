"""Small widgets, one per module, each with its DEFAULT_CSS.

Each name loads its module on first use (PEP 562), so a screen pays only for the widgets it
shows: the TUI's first screen does not load the GPU screen's panel and plots.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llcuda_tui.widgets.chat_message import ChatMessage as ChatMessage
    from llcuda_tui.widgets.context_meter import ContextMeter as ContextMeter
    from llcuda_tui.widgets.conversation_list import ConversationItem as ConversationItem
    from llcuda_tui.widgets.conversation_list import ConversationList as ConversationList
    from llcuda_tui.widgets.experiment_panel import ExperimentPanel as ExperimentPanel
    from llcuda_tui.widgets.gpu_panel import GpuPanel as GpuPanel
    from llcuda_tui.widgets.key_footer import KeyFooter as KeyFooter
    from llcuda_tui.widgets.metric_plot import MetricPlot as MetricPlot
    from llcuda_tui.widgets.prompt_area import PromptArea as PromptArea
    from llcuda_tui.widgets.stream_view import StreamView as StreamView

_EXPORTS = {
    "ChatMessage": "chat_message",
    "ContextMeter": "context_meter",
    "ConversationItem": "conversation_list",
    "ConversationList": "conversation_list",
    "ExperimentPanel": "experiment_panel",
    "GpuPanel": "gpu_panel",
    "KeyFooter": "key_footer",
    "MetricPlot": "metric_plot",
    "PromptArea": "prompt_area",
    "StreamView": "stream_view",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # next time: a plain lookup
    return value
