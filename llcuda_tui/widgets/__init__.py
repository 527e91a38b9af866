"""Small widgets, one per module, each with its DEFAULT_CSS."""

from __future__ import annotations

from llcuda_tui.widgets.chat_message import ChatMessage
from llcuda_tui.widgets.context_meter import ContextMeter
from llcuda_tui.widgets.conversation_list import ConversationItem, ConversationList
from llcuda_tui.widgets.gpu_panel import GpuPanel
from llcuda_tui.widgets.metric_plot import MetricPlot
from llcuda_tui.widgets.stream_view import StreamView

__all__ = [
    "ChatMessage",
    "ContextMeter",
    "ConversationItem",
    "ConversationList",
    "GpuPanel",
    "MetricPlot",
    "StreamView",
]
