"""The transcript: the open conversation's turns, and the reply while it streams.

Streaming path (measured by bench/tui_streaming.py): a model loaded here runs in an engine
process (:class:`~llcuda_tui.core.engine.ProcessEngine`), so no repaint can delay a token;
its chunks arrive in 25 ms batches and are appended to a :class:`ReplyStream` (core); a
10 Hz timer of the screen drains that into a fixed-size :class:`StreamView` (only its own
lines repaint: no layout pass while streaming); the speed readout updates every 4th tick;
the reply is rendered as Markdown once, at the end (a :class:`ChatMessage` here).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.widgets import TextArea

from llcuda_tui.core.chat import RateMeter, ReplyStream
from llcuda_tui.core.conversations import Message, describe_record
from llcuda_tui.core.engine import PrefillProgress
from llcuda_tui.widgets import ChatMessage, StreamView

DRAIN_HZ = 10
"""Every repaint costs the UI thread a few ms whatever it shows (Textual re-renders each
widget whose clip meets the dirty region), and on a small machine that CPU is taken from
the engine: 10 Hz (100 ms batches) keeps the cost of streaming under 2 %."""
READOUT_EVERY = 4
"""Ticks between speed readouts: 10 Hz / 4 = 2.5 Hz."""
PREFILL_EVERY = 2
"""Fewest ticks between prefill progress readouts (5 Hz): on the CPU the engine reports about
4 times a second (_prefill.py), on a GPU its chunks can come every few milliseconds."""
STREAM_SWITCH_INTERVAL_S = 0.0001
"""While a reply streams the UI thread offers the GIL every 0.1 ms (Python's default is
5 ms). This matters for engines in this process (a worker's client, an engine handed to the
app): their thread, back from the GPU or the network, waits at most that long for the GIL
instead of up to 5 ms behind a screen repaint (at 0.5 ms a 360 t/s in-process engine lost 6 %
on an H100 machine)."""


def message_widget(m: Message) -> ChatMessage:
    """A stored turn as the transcript shows it (an assistant turn with its run record)."""
    label = f"assistant · {m.model}" if m.role == "assistant" and m.model else None
    record = describe_record(m.record) if m.record else ""
    return ChatMessage(m.role, m.content, label=label, record_text=record, seq=m.seq)


class Transcript(VerticalScroll):
    """The turns of the open conversation, newest at the bottom (anchored). Focused (Tab),
    it is lifted (app.tcss) and its footer has Copy (the focused turn, else the last reply)
    and Export."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+y", "screen.copy_message", "Copy", tooltip="To the clipboard (OSC 52)"),
        Binding("ctrl+s", "screen.export", "Export", tooltip="The chat as Markdown"),
    ]

    def show(self, messages: Iterable[Message]) -> None:
        """Replace what is shown with ``messages``."""
        self.remove_children()
        self.mount_all(message_widget(m) for m in messages)
        self.anchor()

    def add(self, m: Message) -> None:
        self.mount(message_widget(m))

    def add_failed(self, text: str, model: str | None, error: BaseException | None) -> None:
        """A reply that failed: what streamed before the error, and the error."""
        label = f"assistant · {model or 'model'}"
        self.mount(ChatMessage("assistant", text, label=label, record_text=f"error: {error}"))


class LiveReply:
    """The reply while it streams: drained into ``view`` at :data:`DRAIN_HZ` (by the
    screen's timer calling :meth:`tick`), its speed in the view's border. While it streams
    the prompt's cursor holds still and the GIL switch interval is short."""

    def __init__(self, view: StreamView, prompt: TextArea) -> None:
        self.view = view
        self.prompt = prompt
        self.rate = RateMeter()
        self.ticks = 0
        self._prefill_shown: PrefillProgress | None = None
        self._prefill_due = 0
        self._switch_interval: float | None = None

    def begin(self, title: str) -> None:
        view = self.view
        view.reset(title)
        view.border_subtitle = ""
        view.add_class("-visible")
        self.rate = RateMeter()
        self.ticks = 0
        self._prefill_shown = None
        self._prefill_due = 0
        if self._switch_interval is None:
            self._switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(STREAM_SWITCH_INTERVAL_S)
        # a blinking cursor repaints twice a second: hold it still while the reply streams
        self.prompt.cursor_blink = False

    def tick(self, reply: ReplyStream) -> bool:
        """Show what arrived since the last tick; True when the reply is done."""
        done = reply.done
        self.view.append(reply.drain())
        self.ticks += 1
        prefill = reply.prefill
        if not done and not reply.tokens and prefill is not None:
            # until the first token: the prompt's progress, at most every PREFILL_EVERY ticks
            if prefill is not self._prefill_shown and self.ticks >= self._prefill_due:
                self.view.border_subtitle = prefill.describe()
                self._prefill_shown, self._prefill_due = prefill, self.ticks + PREFILL_EVERY
            return done
        if not done and self.ticks % READOUT_EVERY == 0:
            # in the view's own border: repaints stay inside the view's region
            rate = self.rate.update(reply.tokens)
            self.view.border_subtitle = f"{reply.tokens} tokens · {rate:.1f} t/s"
        return done

    def end(self) -> None:
        self.restore()
        self.prompt.cursor_blink = True
        self.view.remove_class("-visible")

    def restore(self) -> None:
        """Give the GIL switch interval back (also when the app closes mid-reply)."""
        if self._switch_interval is not None:
            sys.setswitchinterval(self._switch_interval)
            self._switch_interval = None
