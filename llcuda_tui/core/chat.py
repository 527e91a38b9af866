"""A chat without its UI: the request, the context budget, the reply buffer and the session.

:class:`ChatSession` is the state of the Chat screen that is not widget state: the phase
(idle, planning a turn, loading a model, streaming a reply), the open conversation and its
turns, the turn about to go out, the reply stream, and the guards that say what may happen
in each phase. The screen renders it and calls it; every "is a reply running?" check is one
of its ``why_not_*`` calls.

:class:`ReplyStream` is how a UI receives tokens without slowing generation: the engine
thread appends each chunk's text to a list (one ``list.append``, no lock, no wake-up) and the
UI drains whatever arrived on its own timer (10-20 Hz). :func:`plan_context` counts the exact
prompt tokens (system + history + the new turn, through the model's chat template) plus the
reply budget against the context, and says how many of the oldest turns would have to go;
it never drops them itself.

Works with anything that has the engine methods used here (``submit``, ``count_tokens``,
``info.n_ctx``): the local engine, an engine process, or a remote worker's client.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from llcuda_tui.core.conversations import (
    ChatSettings,
    Conversation,
    ConversationStore,
    Message,
    last_user_turn,
    write_export,
)
from llcuda_tui.core.errors import LlcudaError, UserInputError

if TYPE_CHECKING:
    from llcuda_tui.core.engine import (
        Chunk,
        GenerationHandle,
        GenerationRequest,
        PrefillProgress,
        RunRecord,
    )
    from llcuda_tui.core.engine import EngineProtocol as ChatEngine
    from llcuda_tui.core.store import ModelChoice

WARN_FRACTION = 0.85
"""The context meter warns from this share of the context on."""

Turn = Mapping[str, str]


def build_messages(system_prompt: str, history: Sequence[Turn]) -> list[dict[str, str]]:
    """The chat messages of a request: the system prompt (if any), then the turns."""
    out = [{"role": "system", "content": system_prompt}] if system_prompt.strip() else []
    out += [{"role": t["role"], "content": t["content"]} for t in history]
    return out


@dataclass(frozen=True)
class ContextPlan:
    """Where a request stands against the context (all counts in tokens)."""

    n_ctx: int
    system_tokens: int
    history_tokens: int
    """The turns (and the template's framing of them), the new one included."""
    reply_budget: int
    turns_to_drop: int = 0
    """The oldest turns that would have to leave the request for it to fit (0 = it fits)."""
    fits_at_all: bool = True
    """False when even the newest turn alone does not fit with the reply budget."""
    warn_fraction: float = WARN_FRACTION

    @property
    def prompt_tokens(self) -> int:
        return self.system_tokens + self.history_tokens

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.reply_budget

    @property
    def fraction(self) -> float:
        return self.total / self.n_ctx if self.n_ctx else 1.0

    @property
    def state(self) -> str:
        """'ok', 'warn' (near the end of the context) or 'over' (history would be cut)."""
        if self.total > self.n_ctx:
            return "over"
        return "warn" if self.fraction >= self.warn_fraction else "ok"

    def describe(self) -> str:
        head = (
            f"{self.total:,}/{self.n_ctx:,} tokens: system {self.system_tokens:,} + history "
            f"{self.history_tokens:,} + reply {self.reply_budget:,}"
        )
        if self.state == "over":
            if not self.fits_at_all:
                return f"{head}. Too long even alone: lower max tokens or load a larger context"
            return f"{head}. Over by {self.total - self.n_ctx:,}: sending asks to drop " + (
                f"the oldest {self.turns_to_drop} turn(s)"
            )
        if self.state == "warn":
            return f"{head}. Near the limit: older turns will soon have to go"
        return head


def plan_context(
    count: Callable[[list[dict[str, str]]], int],
    system_prompt: str,
    turns: Sequence[Turn],
    reply_budget: int,
    n_ctx: int,
) -> ContextPlan:
    """Count ``turns`` (the new user turn last) as the engine would; see :class:`ContextPlan`.

    ``count(messages)`` is the exact prompt token count of a chat request (the engine's
    ``count_tokens``). Dropping goes oldest first, a user turn with the reply after it.
    """
    system = build_messages(system_prompt, [])
    system_tokens = count(system) if system else 0
    prompt = count(build_messages(system_prompt, turns)) if turns else system_tokens
    plan = ContextPlan(n_ctx, system_tokens, max(0, prompt - system_tokens), reply_budget)
    if plan.state != "over":
        return plan
    kept = list(turns)
    dropped = 0
    while len(kept) > 1:
        cut = 2 if len(kept) > 2 and kept[0]["role"] == "user" else 1
        kept, dropped = kept[cut:], dropped + cut
        if count(build_messages(system_prompt, kept)) + reply_budget <= n_ctx:
            return ContextPlan(n_ctx, system_tokens, plan.history_tokens, reply_budget, dropped)
    return ContextPlan(n_ctx, system_tokens, plan.history_tokens, reply_budget, dropped, False)


@dataclass(frozen=True)
class PlanJob:
    """What counting a request against the context needs, taken on the UI thread: a worker
    thread runs :meth:`run` and reads nothing else."""

    engine: ChatEngine
    system_prompt: str
    turns: list[dict[str, str]]
    reply_budget: int

    def run(self) -> ContextPlan:
        """:func:`plan_context` with the engine's own count (raises ``CountUnavailable``
        when the engine cannot count, e.g. a plain OpenAI server)."""
        from llcuda_tui.core.engine import GenerationRequest

        engine = self.engine

        def count(messages: list[dict[str, str]]) -> int:
            return int(engine.count_tokens(GenerationRequest(messages=messages, max_tokens=1)))

        n_ctx = engine.info.n_ctx
        return plan_context(count, self.system_prompt, self.turns, self.reply_budget, n_ctx)


class ReplyStream:
    """One generation's text, collected on the engine thread and drained by the UI.

    ``on_chunk`` runs on the engine thread for every token: it only appends. Everything
    else (joining, counting, rates) happens when the UI calls :meth:`drain`.
    """

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._read = 0
        self.record: RunRecord | None = None
        """The generation's RunRecord, once it has finished."""
        self.error: BaseException | None = None
        self.handle: GenerationHandle | None = None
        self.started = time.perf_counter()
        self.prefill: PrefillProgress | None = None
        """The prompt's prefill progress, newest report (None until the engine sends one:
        engines in another place, a worker, send none)."""

    @classmethod
    def start(cls, engine: ChatEngine, request: GenerationRequest) -> ReplyStream:
        stream = cls()
        stream.handle = engine.submit(request, stream.on_chunk, stream.on_error)
        return stream

    def on_chunk(self, chunk: Chunk) -> None:
        if chunk.prefill is not None:  # progress, not a token: the newest one is all we show
            self.prefill = chunk.prefill
            return
        self._parts.append(chunk.text)
        if chunk.record is not None:
            self.record = chunk.record

    def on_error(self, exc: BaseException) -> None:
        self.error = exc

    def drain(self) -> str:
        """The text that arrived since the last drain."""
        end = len(self._parts)
        text = "".join(self._parts[self._read : end])
        self._read = end
        return text

    @property
    def done(self) -> bool:
        return self.record is not None or self.error is not None

    @property
    def tokens(self) -> int:
        """Tokens generated so far (the last chunk, carrying the record, is not one)."""
        return len(self._parts) - (1 if self.record is not None else 0)

    @property
    def text(self) -> str:
        return "".join(self._parts)

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()


class RateMeter:
    """Tokens per second between readouts (for a live speed display)."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._last: tuple[float, int] | None = None
        self.rate = 0.0

    def update(self, count: int) -> float:
        now = self._clock()
        if self._last is not None:
            t, n = self._last
            if now > t and count >= n:
                self.rate = (count - n) / (now - t)
        self._last = (now, count)
        return self.rate


# --- the session -------------------------------------------------------------------------------


class Phase(Enum):
    """What the chat is doing; only ``IDLE`` lets a turn go out or a model load."""

    IDLE = "idle"
    PLANNING = "planning"
    """A turn is being counted against the context (or waits for the user's yes)."""
    LOADING = "loading"
    """A model is loading (the previous engine is already released)."""
    STREAMING = "streaming"
    """A reply is streaming."""


class EngineHolder(Protocol):
    """Where the chat engine lives (the app, which closes it on exit); the session reads it."""

    @property
    def engine(self) -> ChatEngine | None: ...

    @property
    def engine_choice(self) -> ModelChoice | None: ...


class ChatRefused(LlcudaError):
    """A session transition that its guard refuses (the message says why)."""


# what the guards answer (the keys are the Chat screen's)
REPLY_RUNNING = "a reply is being generated: Esc stops it"
REPLY_STREAMING = "a reply is streaming: Esc stops it first"
MODEL_LOADING = "a model is loading"
NO_ENGINE = "load a model first (Ctrl+L)"
NOTHING_TO_REGENERATE = "nothing to regenerate"
NO_USER_TURN = "no user turn to edit"


@dataclass(frozen=True)
class FinishedReply:
    """A reply that has ended: saved (``saved``, ``record``) or failed (``error``)."""

    text: str
    model: str | None
    """The name of the model that wrote it (None when no choice is known)."""
    error: BaseException | None = None
    record: RunRecord | None = None
    saved: Message | None = None
    """The assistant turn as stored; None when the reply failed, or was stopped before its
    first token (then ``record`` is set: nothing was said, nothing is kept)."""


class ChatSession:
    """The chat's state and its rules, without widgets (see the module docstring).

    ``engines`` holds the loaded engine and its choice (the app); ``default_settings`` gives
    the sampling of a conversation that has none of its own yet.
    """

    def __init__(
        self,
        store: ConversationStore,
        engines: EngineHolder,
        default_settings: Callable[[], ChatSettings] = ChatSettings,
    ) -> None:
        self.store = store
        self.engines = engines
        self.default_settings = default_settings
        self.phase = Phase.IDLE
        self.conversation: Conversation | None = None
        self.messages: list[Message] = []
        """The open conversation's turns, as stored."""
        self.editing_seq: int | None = None
        """The user turn being edited: a send replaces it and what follows."""
        self.pending_user_text: str | None = None
        """The user turn on its way out (saved when its reply starts; None for a regenerate)."""
        self.reply: ReplyStream | None = None
        self.last_record: RunRecord | None = None
        self.plan: ContextPlan | None = None
        """The latest count for the context meter."""
        self.loading: ModelChoice | None = None

    # --- what it reads ----------------------------------------------------------------------

    @property
    def engine(self) -> ChatEngine | None:
        return self.engines.engine

    @property
    def choice(self) -> ModelChoice | None:
        return self.engines.engine_choice

    @property
    def replying(self) -> bool:
        """A turn is on its way out or its reply is streaming."""
        return self.phase in (Phase.PLANNING, Phase.STREAMING)

    @property
    def settings(self) -> ChatSettings:
        conv = self.conversation
        return conv.settings if conv else self.default_settings()

    def history_turns(self) -> list[dict[str, str]]:
        """The turns a request carries (without those an edit replaces)."""
        msgs = self.messages
        if self.editing_seq is not None:
            msgs = [m for m in msgs if m.seq < self.editing_seq]
        return [{"role": m.role, "content": m.content} for m in msgs if m.role != "system"]

    # --- the guards: None when allowed, else why not ------------------------------------------

    def why_not_send(self) -> str | None:
        if self.replying:
            return REPLY_RUNNING
        if self.phase is Phase.LOADING:
            return MODEL_LOADING
        if self.engine is None:
            return NO_ENGINE
        return None

    def why_not_regenerate(self) -> str | None:
        why = self.why_not_send()
        if why is None and last_user_turn(self.messages) is None:
            return NOTHING_TO_REGENERATE
        return why

    def why_not_edit(self) -> str | None:
        if self.replying:
            return REPLY_STREAMING
        return NO_USER_TURN if last_user_turn(self.messages) is None else None

    def why_not_switch(self) -> str | None:
        """Opening or starting another conversation."""
        return REPLY_STREAMING if self.replying else None

    def why_not_delete(self, conversation_id: int) -> str | None:
        current = self.conversation is not None and self.conversation.id == conversation_id
        return REPLY_STREAMING if current and self.replying else None

    def why_not_load(self) -> str | None:
        if self.replying:
            return REPLY_STREAMING
        return MODEL_LOADING if self.phase is Phase.LOADING else None

    @staticmethod
    def _check(why: str | None) -> None:
        if why is not None:
            raise ChatRefused(why)

    # --- conversations ----------------------------------------------------------------------

    def open_conversation(self, conv: Conversation | None) -> None:
        """Make ``conv`` (None: none yet) the open conversation; an edit in progress ends."""
        self.conversation = conv
        self.editing_seq = None
        self.messages = self.store.messages(conv.id) if conv else []

    def new_conversation(self) -> Conversation:
        """Create a conversation (for the loaded model, with the default settings) and open
        it (it has no turns yet)."""
        choice = self.choice
        conv = self.store.create(
            model=choice.name if choice else None, settings=self.default_settings()
        )
        self.conversation, self.messages, self.editing_seq = conv, [], None
        return conv

    def rename(self, conversation_id: int, title: str) -> Conversation:
        renamed = self.store.rename(conversation_id, title)
        if self.conversation is not None and self.conversation.id == conversation_id:
            self.conversation = renamed
        return renamed

    def delete(self, conversation_id: int) -> bool:
        """Delete a conversation; True when it was the open one (now none is)."""
        self._check(self.why_not_delete(conversation_id))
        self.store.delete(conversation_id)
        if self.conversation is not None and self.conversation.id == conversation_id:
            self.open_conversation(None)
            return True
        return False

    def update_settings(self, system_prompt: str, settings: ChatSettings) -> Conversation:
        """Set the open conversation's system prompt and sampling (creating it if needed)."""
        target = self.conversation or self.new_conversation()
        self.conversation = self.store.update(
            target.id, system_prompt=system_prompt, settings=settings
        )
        return self.conversation

    def export(self, directory: Path) -> Path | None:
        """Write the open conversation as Markdown into ``directory``; None when none is open."""
        conv = self.conversation
        if conv is None:
            return None
        return write_export(self.store.get(conv.id), self.store.messages(conv.id), directory)

    # --- models -----------------------------------------------------------------------------

    def begin_load(self, choice: ModelChoice) -> None:
        """IDLE -> LOADING."""
        self._check(self.why_not_load())
        self.phase, self.loading = Phase.LOADING, choice

    def end_load(self) -> None:
        """A load ended (loaded or failed): LOADING -> IDLE; other phases stay."""
        if self.phase is Phase.LOADING:
            self.phase = Phase.IDLE
        self.loading = None

    def engine_loaded(self, choice: ModelChoice) -> None:
        """An engine was loaded here or attached (a worker): a streaming reply is stopped
        (before its engine goes), and the open conversation remembers the model."""
        self.end_load()
        if self.reply is not None:
            self.reply.cancel()
        if self.conversation is not None:
            self.conversation = self.store.update(self.conversation.id, model=choice.name)

    # --- a turn and its reply ---------------------------------------------------------------

    def begin_send(self, text: str) -> list[dict[str, str]]:
        """IDLE -> PLANNING with the user's ``text``: the turns to plan (an edit in progress
        replaces the edited turn and what followed it now)."""
        self._check(self.why_not_send())
        if self.editing_seq is not None and self.conversation is not None:
            self.store.truncate(self.conversation.id, self.editing_seq)
            self.open_conversation(self.store.get(self.conversation.id))
        self.editing_seq = None
        self.pending_user_text = text
        self.phase = Phase.PLANNING
        return [*self.history_turns(), {"role": "user", "content": text}]

    def begin_regenerate(self) -> list[dict[str, str]]:
        """IDLE -> PLANNING: the last reply goes; the turns to plan its replacement."""
        self._check(self.why_not_regenerate())
        last = last_user_turn(self.messages)
        conv = self.conversation
        assert last is not None and conv is not None  # the guard saw a user turn
        self.store.truncate(conv.id, last.seq + 1)
        self.open_conversation(self.store.get(conv.id))
        self.pending_user_text = None
        self.phase = Phase.PLANNING
        return self.history_turns()

    def plan_job(self, turns: list[dict[str, str]]) -> PlanJob | None:
        """The count of ``turns`` for a worker thread; None when no engine is loaded."""
        engine = self.engine
        if engine is None:
            return None
        conv = self.conversation
        system = conv.system_prompt if conv else ""
        return PlanJob(engine, system, turns, self.settings.max_tokens)

    def abandon_send(self) -> None:
        """PLANNING -> IDLE: the turn does not go out (refused, declined or uncountable)."""
        if self.phase is Phase.PLANNING:
            self.phase = Phase.IDLE
        self.pending_user_text = None

    def start_reply(self, turns: Sequence[Turn]) -> Message | None:
        """PLANNING -> STREAMING: save the pending user turn (returned, for the transcript;
        None for a regenerate) and start the reply with ``turns``. Raises ``LlcudaError``
        (and goes back to IDLE) when the request cannot be made."""
        from llcuda_tui.core.engine import GenerationRequest

        if self.phase is not Phase.PLANNING:
            raise ChatRefused(f"no turn is on its way out (the chat is {self.phase.value})")
        user_text, self.pending_user_text = self.pending_user_text, None
        try:
            engine = self.engine
            if engine is None:
                raise LlcudaError(NO_ENGINE)
            conv = self.conversation or self.new_conversation()
            request = GenerationRequest(
                messages=build_messages(conv.system_prompt, turns),
                max_tokens=conv.settings.max_tokens,
                sampling=conv.settings.sampling(),
                prefill_progress=True,  # the live reply shows it (a long prompt takes seconds)
            )
            saved = None
            if user_text is not None:
                saved = self.store.add_message(conv.id, "user", user_text)
                self.messages.append(saved)
            self.reply = ReplyStream.start(engine, request)
        except BaseException:
            self.phase = Phase.IDLE
            raise
        self.phase = Phase.STREAMING
        return saved

    def stop_reply(self) -> bool:
        """Ask a streaming reply to stop (it ends at its next token); False when none is."""
        if self.reply is None:
            return False
        self.reply.cancel()
        return True

    def finish_reply(self) -> FinishedReply:
        """STREAMING -> IDLE once the reply is done: it is saved with its record (or, when
        it failed, not saved)."""
        reply = self.reply
        if self.phase is not Phase.STREAMING or reply is None:
            raise ChatRefused(f"no reply is streaming (the chat is {self.phase.value})")
        self.reply, self.phase = None, Phase.IDLE
        choice = self.choice
        name = choice.name if choice is not None else None
        conv, record = self.conversation, reply.record
        if reply.error is not None or conv is None or record is None:
            return FinishedReply(reply.text, name, reply.error)
        self.last_record = record
        if record.stop_reason == "cancelled" and not reply.text.strip():
            # stopped before the first token: an empty assistant turn would be sent back
            # to the model with the next turn and shown as a blank reply; keep none
            return FinishedReply(reply.text, name, None, record)
        try:
            saved = self.store.add_message(
                conv.id, "assistant", reply.text, model=name, record=record.to_dict()
            )
        except UserInputError as exc:  # deleted (another TUI on this home): say so, loudly
            self.conversation, self.messages = None, []
            return FinishedReply(reply.text, name, exc)
        self.messages.append(saved)
        self.conversation = self.store.get(conv.id)
        return FinishedReply(reply.text, name, None, record, saved)

    # --- editing the last turn --------------------------------------------------------------

    def begin_edit(self) -> Message:
        """Edit the last user turn (returned): the next send replaces it and its reply."""
        self._check(self.why_not_edit())
        last = last_user_turn(self.messages)
        assert last is not None  # the guard saw it
        self.editing_seq = last.seq
        return last

    def cancel_edit(self) -> bool:
        """End an edit in progress; False when there was none."""
        if self.editing_seq is None:
            return False
        self.editing_seq = None
        return True
