"""The transcript: the open conversation's turns, and the reply while it streams.

The reply streams in place, as the transcript's last turn: a :class:`ChatMessage` made with
``streaming=True``, where it then stays. Streaming path (measured by bench/tui_streaming.py):
a model loaded here runs in an engine process (:class:`~llcuda_tui.core.engine.ProcessEngine`),
so no repaint can delay a token; its chunks arrive in 25 ms batches and are appended to a
:class:`ReplyStream` (core); a 10 Hz timer of the screen drains that (a short batch waits a
tick) into the turn's :class:`~llcuda_tui.widgets.StreamView` (plain wrapped lines: a batch
repaints its own lines, and the view lays out once while the reply streams, when it outgrows
its first height); the speed readout, in the turn's record line, updates at most every 4th
tick, with the text, without a layout; the reply is rendered as Markdown once, at the end, in
the same turn (:meth:`ChatMessage.finish`).
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterable
from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.widgets import TextArea

from llcuda_tui.core.chat import RateMeter, ReplyStream
from llcuda_tui.core.conversations import Message, describe_record
from llcuda_tui.core.engine import PrefillProgress
from llcuda_tui.widgets import ChatMessage

DRAIN_HZ = 10
"""Every repaint costs the UI thread a few ms whatever it shows (Textual re-renders each
widget whose clip meets the dirty region: at 120x40 2.4 ms a repaint, 0.55 ms of it the
streaming lines, the rest the prompt, footer, sidebar and the compositor's cuts), and on a
small machine that CPU is taken from the engine: 10 Hz (100 ms batches) keeps the cost of
streaming under 2 %."""
MIN_REPAINT_CHARS = 64
"""A tick shows fewer new characters only if they waited a tick already (or the reply is done,
or nothing is shown yet): a repaint costs about the same for one word as for a line, so an
engine slower than ~160 tok/s gets 5 repaints a second of up to 2 ticks' text instead of 10 of
one tick's (at 110 tok/s on the 2-core VM the UI thread's CPU while the reply decoded went
from 4.8 to 4.0 % of a core for prose, 5.1 to 4.0 % for Markdown; at 250 tok/s nothing
changes; bench/tui_ui_cost.py -n 128 --rate 110 --ttft-ms 40, 9 replies each)."""
HOLD_TICKS = 2
"""New text is shown by its second tick at the latest (it waits at most 100 ms more)."""
READOUT_EVERY = 4
"""Fewest ticks between speed readouts (10 Hz / 4 = 2.5 Hz), each on a tick that repaints the
text anyway (a readout alone is a repaint of its own)."""
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

    def finish(self, streamed: ChatMessage | None, m: Message) -> None:
        """The reply ``m`` (saved) is complete: the turn it ``streamed`` into shows it."""
        if streamed is None or not streamed.is_attached:  # the transcript was re-shown
            self.add(m)
            return
        streamed.finish(m.content, describe_record(m.record) if m.record else "", m.seq)

    def finish_failed(
        self,
        streamed: ChatMessage | None,
        text: str,
        model: str | None,
        error: BaseException | None,
    ) -> None:
        """A reply that failed: what streamed before the error, and the error."""
        if streamed is not None and streamed.is_attached:
            streamed.finish(text, f"error: {error}")
            return
        label = f"assistant · {model or 'model'}"
        self.mount(ChatMessage("assistant", text, label=label, record_text=f"error: {error}"))

    def add_streaming(self, model: str | None) -> ChatMessage:
        """The turn a reply streams into, as the last one."""
        message = ChatMessage(
            "assistant",
            label=f"assistant · {model or 'model'}",
            record_text=STREAMING_NOTE,
            streaming=True,
        )
        if message.stream is not None:
            message.stream.step, message.stream.max_lines = stream_limits(self.size.height)
        self.mount(message)
        return message

    def on_resize(self) -> None:
        for message in self.query(ChatMessage):
            if message.stream is not None:
                message.stream.set_limits(*stream_limits(self.size.height))


def stream_limits(height: int) -> tuple[int, int]:
    """How a streaming reply grows in a transcript ``height`` lines tall: (its first height,
    its second and last). Each growth is a layout and a repaint of the transcript (~40 ms in
    a long one at 120x40, widgets/stream_view.py): a sixth of the view at first (mounted with
    it, before the first token), then half the view, one growth while it streams. At most
    half, so your turn stays in sight above it: each new line then repaints the reply's lines,
    and a screenful of them cost ~14 ms a repaint against ~10 ms for half of one
    (bench/tui_ui_cost.py); the finished reply, in the same turn, has every line."""
    return max(2, height // 6), max(3, height // 2)


STREAMING_NOTE = "streaming (Esc stops)"


class LiveReply:
    """The reply while it streams: drained into its turn (``message``) at :data:`DRAIN_HZ`
    (by the screen's timer calling :meth:`tick`; a short batch waits a tick,
    :data:`MIN_REPAINT_CHARS`), its progress in the turn's record line.
    While it streams the prompt's cursor holds still, the GIL switch interval is short and the
    objects made before it are frozen for the garbage collector (``gc.freeze``)."""

    def __init__(self, prompt: TextArea) -> None:
        self.prompt = prompt
        self.message: ChatMessage | None = None
        self.readout = ""
        """What the turn's record line says now (tokens and speed, or the prefill)."""
        self.rate = RateMeter()
        self.ticks = 0
        self._pending: list[str] = []
        """Drained text not shown yet (see :data:`MIN_REPAINT_CHARS`)."""
        self._held = 0
        self._shown_any = False
        self._readout_tick = 0
        self._prefill_shown: PrefillProgress | None = None
        self._prefill_due = 0
        self._switch_interval: float | None = None
        self._gc_frozen = False

    def begin(self, message: ChatMessage) -> None:
        self.message = message
        self.readout = ""
        self.rate = RateMeter()
        self.ticks = 0
        self._pending, self._held, self._shown_any, self._readout_tick = [], 0, False, 0
        self._prefill_shown = None
        self._prefill_due = 0
        if self._switch_interval is None:
            self._switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(STREAM_SWITCH_INTERVAL_S)
        if not self._gc_frozen:
            # the collector leaves what existed before the reply alone while it streams: a
            # full collection walks all of it (~220k objects, a removed conversation's widgets
            # among them), 46-311 ms of the UI thread, in 7 of 24 replies' decoding (2-core VM,
            # bench/tui_ui_cost.py -n 128 --rate 110); frozen, in none of 24, and the young
            # generations' passes stayed at 3 ms or less. What became garbage meanwhile goes
            # at the first full collection after the reply.
            gc.freeze()
            self._gc_frozen = True
        # a blinking cursor repaints twice a second: hold it still while the reply streams
        self.prompt.cursor_blink = False

    def tick(self, reply: ReplyStream) -> bool:
        """Show what arrived since the last tick, or hold it a tick (it is short); True when
        the reply is done (all of it is shown then)."""
        done = reply.done
        message = self.message
        text = reply.drain()
        if message is None or not message.is_attached:  # the transcript was re-shown
            return done
        self.ticks += 1
        repainted = self.show_text(text, done)
        prefill = reply.prefill
        if not done and not reply.tokens and prefill is not None:
            # until the first token: the prompt's progress, at most every PREFILL_EVERY ticks
            if prefill is not self._prefill_shown and self.ticks >= self._prefill_due:
                self.show(f"{prefill.describe()} · Esc stops")
                self._prefill_shown, self._prefill_due = prefill, self.ticks + PREFILL_EVERY
            return done
        due = self.ticks - self._readout_tick >= READOUT_EVERY
        if not done and due and (repainted or not self._pending):
            self._readout_tick = self.ticks
            rate = self.rate.update(reply.tokens)
            self.show(f"{reply.tokens} tokens · {rate:.1f} t/s · Esc stops")
        return done

    def show_text(self, text: str, done: bool) -> bool:
        """Append the pending text and ``text`` to the turn, unless together they are under
        :data:`MIN_REPAINT_CHARS` and have waited less than :data:`HOLD_TICKS` (the first
        text and the last are shown at once); True when it appended."""
        if text:
            self._pending.append(text)
        if not self._pending:
            return False
        self._held += 1
        size = sum(len(t) for t in self._pending)
        if not (
            done or not self._shown_any or size >= MIN_REPAINT_CHARS or self._held >= HOLD_TICKS
        ):
            return False
        assert self.message is not None
        self.message.append("".join(self._pending))
        self._pending.clear()
        self._held, self._shown_any = 0, True
        return True

    def show(self, readout: str) -> None:
        self.readout = readout
        if self.message is not None:
            self.message.show_progress(readout)

    def end(self) -> ChatMessage | None:
        """The reply stopped streaming: its turn (for the screen to finish or remove)."""
        self.restore()
        self.prompt.cursor_blink = True
        message, self.message = self.message, None
        return message

    def restore(self) -> None:
        """Give the GIL switch interval back and unfreeze the collector's objects (also when
        the app closes mid-reply)."""
        if self._switch_interval is not None:
            sys.setswitchinterval(self._switch_interval)
            self._switch_interval = None
        if self._gc_frozen:
            gc.unfreeze()
            self._gc_frozen = False
