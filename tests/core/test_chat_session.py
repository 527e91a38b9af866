"""The chat session without a UI: its phases, the guards of each phase, and whole turns on a
real conversation store (SQLite under LLCUDA_HOME) with the starter model on the CPU."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from llcuda_tui.core.chat import (
    MODEL_LOADING,
    NO_ENGINE,
    NO_USER_TURN,
    NOTHING_TO_REGENERATE,
    REPLY_RUNNING,
    REPLY_STREAMING,
    ChatRefused,
    ChatSession,
    Phase,
)
from llcuda_tui.core.config import Paths
from llcuda_tui.core.conversations import ChatSettings, ConversationStore
from llcuda_tui.core.engine import Engine, EngineConfig, EngineProtocol
from llcuda_tui.core.errors import LlcudaError
from llcuda_tui.core.store import ModelChoice

GREEDY = ChatSettings(temperature=0.0, max_tokens=8)


@dataclass
class Holder:
    """Where the session finds the engine (the app, in the TUI)."""

    engine: EngineProtocol | None = None
    engine_choice: ModelChoice | None = None


@pytest.fixture()
def store(llcuda_home: Path) -> Iterator[ConversationStore]:
    conversations = ConversationStore.open(Paths.from_env())
    yield conversations
    conversations.close()


@pytest.fixture(scope="module")
def smollm_engine(smollm_path: Path, cpu_threads: int) -> Iterator[Engine]:
    with Engine.load(
        EngineConfig(smollm_path, n_gpu_layers=0, n_ctx=256, n_threads=cpu_threads)
    ) as engine:
        yield engine


@pytest.fixture()
def loaded(smollm_engine: Engine, smollm_path: Path) -> Holder:
    choice = ModelChoice("smollm2-135m-instruct", smollm_path, None, "Q4_1", 1, "starter")
    return Holder(smollm_engine, choice)


def session_on(store: ConversationStore, holder: Holder) -> ChatSession:
    return ChatSession(store, holder, default_settings=lambda: GREEDY)


def run_reply(session: ChatSession, turns: list[dict[str, str]]) -> None:
    """Start the reply to ``turns`` and wait (on this thread) until it is done."""
    session.start_reply(turns)
    assert session.phase is Phase.STREAMING and session.reply is not None
    handle = session.reply.handle
    assert handle is not None
    with contextlib.suppress(LlcudaError):  # a failed reply's error is in the stream too
        handle.result(timeout=120)
    assert session.reply.done


def test_a_new_session_is_idle_and_asks_for_an_engine(store: ConversationStore) -> None:
    session = session_on(store, Holder())
    assert session.phase is Phase.IDLE and session.conversation is None and not session.replying
    assert session.why_not_send() == NO_ENGINE
    assert session.why_not_regenerate() == NO_ENGINE
    assert session.why_not_edit() == NO_USER_TURN
    assert session.why_not_switch() is None and session.why_not_load() is None
    with pytest.raises(ChatRefused, match="load a model first"):
        session.begin_send("hi")
    assert session.phase is Phase.IDLE and session.pending_user_text is None
    with pytest.raises(ChatRefused):
        session.finish_reply()  # nothing streams
    with pytest.raises(ChatRefused):
        session.start_reply([{"role": "user", "content": "hi"}])  # nothing was planned
    assert not session.stop_reply() and not session.cancel_edit()
    assert session.settings == GREEDY  # no conversation yet: the defaults


def test_loading_blocks_sending_and_another_load_until_it_ends(
    store: ConversationStore, loaded: Holder
) -> None:
    session = session_on(store, loaded)
    assert loaded.engine_choice is not None
    session.begin_load(loaded.engine_choice)
    assert session.phase is Phase.LOADING and session.loading is loaded.engine_choice
    assert session.why_not_send() == MODEL_LOADING and session.why_not_load() == MODEL_LOADING
    assert session.why_not_switch() is None  # conversations still open while a model loads
    with pytest.raises(ChatRefused):
        session.begin_load(loaded.engine_choice)
    session.end_load()
    assert session.phase is Phase.IDLE and session.loading is None
    assert session.why_not_send() is None
    session.end_load()  # a second end (a worker attached meanwhile) changes nothing
    assert session.phase is Phase.IDLE


def test_a_loaded_engine_is_remembered_by_the_open_conversation(
    store: ConversationStore, loaded: Holder
) -> None:
    conv = store.create(title="about rivers")
    session = session_on(store, loaded)
    session.open_conversation(conv)
    assert loaded.engine_choice is not None
    session.begin_load(loaded.engine_choice)
    session.engine_loaded(loaded.engine_choice)
    assert session.phase is Phase.IDLE
    assert session.conversation is not None
    assert session.conversation.model == "smollm2-135m-instruct"
    assert store.get(conv.id).model == "smollm2-135m-instruct"


def test_a_turn_plans_streams_and_is_saved_and_every_guard_holds_meanwhile(
    store: ConversationStore, loaded: Holder
) -> None:
    other = store.create(title="another chat")
    session = session_on(store, loaded)
    turns = session.begin_send("Say hello.")
    assert turns == [{"role": "user", "content": "Say hello."}]
    assert session.phase is Phase.PLANNING and session.pending_user_text == "Say hello."
    # one answer for every "is a reply running?" question, while planning and streaming
    for phase in ("planning", "streaming"):
        assert session.phase.value == phase and session.replying
        assert session.why_not_send() == REPLY_RUNNING
        assert session.why_not_regenerate() == REPLY_RUNNING
        assert session.why_not_edit() == REPLY_STREAMING
        assert session.why_not_switch() == REPLY_STREAMING
        assert session.why_not_load() == REPLY_STREAMING
        assert session.why_not_delete(other.id) is None
        if phase == "planning":
            job = session.plan_job(turns)
            assert job is not None and job.system_prompt == "" and job.reply_budget == 8
            plan = job.run()
            assert plan.state == "ok" and plan.n_ctx == 256 and plan.reply_budget == 8
            session.plan = plan
            user_turn = session.start_reply(turns)
            assert user_turn is not None and user_turn.content == "Say hello."
            conv = session.conversation
            assert conv is not None  # the first reply starts a conversation
            assert session.why_not_delete(conv.id) == REPLY_STREAMING
    assert session.reply is not None and session.reply.handle is not None
    session.reply.handle.result(timeout=120)
    done = session.finish_reply()
    assert session.phase is Phase.IDLE and session.reply is None
    assert done.error is None and done.saved is not None and done.record is not None
    assert done.model == "smollm2-135m-instruct" and done.saved.model == done.model
    assert done.record.generated_tokens > 0 and session.last_record is done.record
    saved = store.messages(conv.id)
    assert [(m.role, m.content) for m in saved] == [
        ("user", "Say hello."),
        ("assistant", done.text),
    ]
    assert saved[1].record is not None and saved[1].record["stop_reason"] in ("eos", "length")
    assert session.messages == saved
    assert session.why_not_send() is None and session.why_not_delete(conv.id) is None


def test_regenerate_replaces_the_last_reply(store: ConversationStore, loaded: Holder) -> None:
    session = session_on(store, loaded)
    assert session.why_not_regenerate() == NOTHING_TO_REGENERATE
    run_reply(session, session.begin_send("Name a color."))
    first = session.finish_reply().saved
    assert first is not None and session.conversation is not None
    turns = session.begin_regenerate()
    assert turns == [{"role": "user", "content": "Name a color."}]
    assert session.phase is Phase.PLANNING and session.pending_user_text is None
    assert [m.role for m in store.messages(session.conversation.id)] == ["user"]
    assert session.start_reply(turns) is None  # no new user turn to show
    assert session.reply is not None and session.reply.handle is not None
    session.reply.handle.result(timeout=120)
    again = session.finish_reply().saved
    assert again is not None and again.id != first.id
    assert [m.role for m in store.messages(session.conversation.id)] == ["user", "assistant"]


def test_editing_the_last_turn_replaces_it_and_its_reply(
    store: ConversationStore, loaded: Holder
) -> None:
    session = session_on(store, loaded)
    run_reply(session, session.begin_send("Name a color."))
    session.finish_reply()
    edited = session.begin_edit()
    assert edited.content == "Name a color." and session.editing_seq == edited.seq
    assert session.history_turns() == []  # the edited turn and its reply leave the request
    assert session.cancel_edit() and session.editing_seq is None
    assert len(session.history_turns()) == 2
    session.begin_edit()
    turns = session.begin_send("Name a fruit.")
    assert turns == [{"role": "user", "content": "Name a fruit."}] and session.editing_seq is None
    assert session.conversation is not None
    assert store.messages(session.conversation.id) == []  # cut when the new turn went out
    run_reply(session, turns)
    session.finish_reply()
    saved = store.messages(session.conversation.id)
    assert [m.role for m in saved] == ["user", "assistant"]
    assert saved[0].content == "Name a fruit."


def test_a_declined_or_impossible_send_goes_back_to_idle(
    store: ConversationStore, loaded: Holder
) -> None:
    session = session_on(store, loaded)
    session.begin_send("hi")
    session.abandon_send()
    assert session.phase is Phase.IDLE and session.pending_user_text is None
    assert session.conversation is None  # nothing was saved
    # the engine went away between the plan and the reply: refused, and idle again
    session.begin_send("hi")
    loaded.engine = None
    with pytest.raises(LlcudaError, match="load a model first"):
        session.start_reply([{"role": "user", "content": "hi"}])
    assert session.phase is Phase.IDLE and session.reply is None
    assert session.plan_job([{"role": "user", "content": "hi"}]) is None


def test_a_stopped_reply_is_saved_as_cancelled(store: ConversationStore, loaded: Holder) -> None:
    session = session_on(store, loaded)
    conv = store.create(settings=ChatSettings(temperature=0.0, max_tokens=200))
    session.open_conversation(conv)
    turns = session.begin_send("Write a long story about a dragon.")
    session.start_reply(turns)
    reply = session.reply
    assert reply is not None and reply.handle is not None
    deadline = time.monotonic() + 60
    while not reply.text.strip():  # stopped after it said something
        assert time.monotonic() < deadline and not reply.done, "no token within 60 s"
        time.sleep(0.01)
    assert session.stop_reply()
    record = reply.handle.result(timeout=120)
    assert record.stop_reason == "cancelled" and record.generated_tokens < 200
    done = session.finish_reply()
    assert done.saved is not None and done.saved.record is not None
    assert done.saved.record["stop_reason"] == "cancelled"


def test_a_reply_stopped_before_its_first_token_is_not_saved(
    store: ConversationStore, loaded: Holder
) -> None:
    session = session_on(store, loaded)
    conv = store.create(settings=ChatSettings(temperature=0.0, max_tokens=200))
    session.open_conversation(conv)
    # a long prompt: its prefill keeps the first token well behind the stop below
    session.start_reply(session.begin_send("Summarize this: " + "river stone " * 90))
    reply = session.reply
    assert reply is not None and reply.handle is not None
    assert session.stop_reply()
    record = reply.handle.result(timeout=120)
    assert record.stop_reason == "cancelled" and reply.text == ""
    done = session.finish_reply()
    assert session.phase is Phase.IDLE
    assert done.saved is None and done.record is record and done.error is None
    # the user's turn stays (to regenerate or edit); no empty assistant turn after it
    assert [m.role for m in store.messages(conv.id)] == ["user"]
    assert [m.role for m in session.messages] == ["user"]
    assert session.last_record is record


def test_a_failed_reply_is_not_saved(store: ConversationStore, loaded: Holder) -> None:
    session = session_on(store, loaded)
    too_long = "word " * 400  # more than the 256-token context: the engine refuses it
    run_reply(session, session.begin_send(too_long))
    done = session.finish_reply()
    assert session.phase is Phase.IDLE
    assert done.error is not None and done.saved is None and done.record is None
    assert session.conversation is not None
    assert [m.role for m in store.messages(session.conversation.id)] == ["user"]
    assert session.last_record is None


def test_conversations_rename_delete_settings_export(
    store: ConversationStore, tmp_path: Path
) -> None:
    session = session_on(store, Holder())
    assert session.export(tmp_path) is None  # nothing open
    conv = session.update_settings("Be brief.", ChatSettings(temperature=0.3, max_tokens=16))
    assert session.conversation == conv and conv.system_prompt == "Be brief."
    assert session.settings.max_tokens == 16
    renamed = session.rename(conv.id, "Rivers")
    assert session.conversation == renamed and renamed.title == "Rivers"
    other = store.create(title="other")
    assert not session.delete(other.id)  # not the open one: that stays open
    assert session.conversation == renamed
    path = session.export(tmp_path)
    assert path is not None and path.read_text().startswith("# Rivers")
    assert session.delete(conv.id)
    assert session.conversation is None and session.messages == []
    assert store.conversations() == []
