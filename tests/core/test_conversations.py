"""The conversation store on a real SQLite file (no Textual)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from llcuda_tui.core.config import Paths, SamplingDefaults
from llcuda_tui.core.conversations import (
    BUILTIN_PRESETS,
    DEFAULT_TITLE,
    ChatSettings,
    ConversationStore,
    describe_record,
    export_markdown,
    last_user_turn,
    title_from,
    write_export,
)
from llcuda_tui.core.errors import UserInputError

RECORD = {
    "ttft_s": 0.125,
    "prefill_tokens_per_s": 812.4,
    "decode_tokens_per_s": 95.25,
    "prompt_tokens": 31,
    "generated_tokens": 12,
    "model_sha256": "b179c9523d0e6a0f98a3" + "0" * 44,
    "backend": "CPU",
    "n_gpu_layers": 0,
    "stop_reason": "eos",
}


@pytest.fixture()
def store(llcuda_home: Path):
    ticks = itertools.count(1_700_000_000)
    with ConversationStore.open(Paths.from_env(), clock=lambda: float(next(ticks))) as s:
        yield s


def test_lives_under_llcuda_home(store: ConversationStore, llcuda_home: Path) -> None:
    assert store.path == llcuda_home / "data" / "conversations.sqlite"
    assert store.path.exists()


def test_create_add_and_read_back(store: ConversationStore) -> None:
    c = store.create(model="smollm2-135m-instruct", system_prompt="Be brief.")
    assert c.title == DEFAULT_TITLE and c.settings == ChatSettings()
    store.add_message(c.id, "user", "What is a GGUF file, in one line?")
    store.add_message(c.id, "assistant", "A model file.", model="smollm", record=RECORD)
    msgs = store.messages(c.id)
    assert [(m.seq, m.role) for m in msgs] == [(0, "user"), (1, "assistant")]
    assert msgs[1].record == RECORD and msgs[1].model == "smollm"
    again = store.get(c.id)
    assert again.title == "What is a GGUF file, in one line?"  # first user turn titles it
    assert again.system_prompt == "Be brief." and again.updated_at > c.updated_at


def test_reopening_the_file_keeps_everything(llcuda_home: Path) -> None:
    paths = Paths.from_env()
    with ConversationStore.open(paths) as s:
        cid = s.create().id
        s.add_message(cid, "user", "hello")
    with ConversationStore.open(paths) as s:
        assert [m.content for m in s.messages(cid)] == ["hello"]


def test_list_is_newest_first_and_search_matches_titles_and_messages(
    store: ConversationStore,
) -> None:
    a = store.create(title="Rust lifetimes")
    b = store.create(title="Cooking")
    store.add_message(b.id, "assistant", "Use 100% rye_flour for this bread.")
    c = store.create(title="Trip plans")
    assert [x.id for x in store.conversations()] == [c.id, b.id, a.id]
    assert [x.id for x in store.conversations("rust")] == [a.id]
    assert [x.id for x in store.conversations("rye")] == [b.id]
    # LIKE wildcards in the query are literal characters
    assert [x.id for x in store.conversations("100%")] == [b.id]
    assert [x.id for x in store.conversations("rye_f")] == [b.id]
    assert store.conversations("r_e") == []


def test_rename_delete_and_truncate(store: ConversationStore) -> None:
    c = store.create()
    for i, role in enumerate(["user", "assistant", "user", "assistant"]):
        store.add_message(c.id, role, f"turn {i}")
    assert store.rename(c.id, "  Renamed   chat ").title == "Renamed chat"
    with pytest.raises(UserInputError):
        store.rename(c.id, "   ")
    store.truncate(c.id, 2)
    msgs = store.messages(c.id)
    assert [m.content for m in msgs] == ["turn 0", "turn 1"]
    assert last_user_turn(msgs).content == "turn 0"
    store.add_message(c.id, "user", "again")
    assert store.messages(c.id)[-1].seq == 2
    store.delete(c.id)
    assert store.conversations() == []
    with pytest.raises(UserInputError):
        store.get(c.id)
    # messages went with the conversation (foreign key cascade)
    assert store._db.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 0


def test_settings_are_per_conversation_and_validated(store: ConversationStore) -> None:
    c = store.create(settings=ChatSettings.from_defaults(SamplingDefaults()))
    s = ChatSettings.from_dict({"temperature": "0", "max_tokens": "64", "top_k": "7"})
    store.update(c.id, settings=s, system_prompt="You are terse.")
    got = store.get(c.id)
    assert got.settings.temperature == 0.0 and got.settings.max_tokens == 64
    assert got.settings.top_k == 7 and got.settings.sampling().greedy
    assert store.create().settings == ChatSettings()  # the other conversation is untouched
    with pytest.raises(UserInputError, match="top-p"):
        ChatSettings.from_dict({"top_p": "3"})
    with pytest.raises(UserInputError, match="not a number"):
        ChatSettings.from_dict({"temperature": "warm"})
    with pytest.raises(UserInputError, match="max tokens"):
        ChatSettings.from_dict({"max_tokens": "0"})


def test_presets_builtin_and_user(store: ConversationStore) -> None:
    assert store.presets() == BUILTIN_PRESETS
    store.save_preset("pirate", "Talk like a pirate.")
    store.save_preset("terse", "One word.")
    presets = store.presets()
    assert presets["pirate"] == "Talk like a pirate." and presets["terse"] == "One word."
    store.delete_preset("terse")
    assert store.presets()["terse"] == BUILTIN_PRESETS["terse"]
    with pytest.raises(UserInputError):
        store.save_preset(" ", "x")


def test_export_markdown(store: ConversationStore, tmp_path: Path) -> None:
    c = store.create(model="smollm2-135m-instruct", system_prompt="Be brief.")
    store.add_message(c.id, "user", "Say hi.")
    store.add_message(c.id, "assistant", "**Hi!**", record=RECORD)
    conv, msgs = store.get(c.id), store.messages(c.id)
    md = export_markdown(conv, msgs)
    assert md.startswith("# Say hi.\n")
    assert "- model: smollm2-135m-instruct" in md and "## System\n\nBe brief." in md
    assert "## User\n\nSay hi." in md and "## Assistant\n\n**Hi!**" in md
    assert "_TTFT 125 ms · prefill 812.4 t/s · decode 95.2 t/s" in md
    path = write_export(conv, msgs, tmp_path / "exports")
    assert path.name == f"conversation-{c.id}.md" and path.read_text() == md


def test_an_export_never_overwrites_an_earlier_one(
    store: ConversationStore, tmp_path: Path
) -> None:
    c = store.create()
    store.add_message(c.id, "user", "Say hi.")
    conv, msgs = store.get(c.id), store.messages(c.id)
    exports = tmp_path / "exports"
    first = write_export(conv, msgs, exports)
    first.write_text("my notes on this chat\n")  # an earlier export, edited since
    second = write_export(conv, msgs, exports)
    third = write_export(conv, msgs, exports)
    assert first.read_text() == "my notes on this chat\n"
    assert [second.name, third.name] == [f"conversation-{c.id}-2.md", f"conversation-{c.id}-3.md"]
    assert second.read_text() == export_markdown(conv, msgs) == third.read_text()
    assert sorted(p.name for p in exports.iterdir()) == sorted(
        p.name for p in (first, second, third)
    )  # and no temp file stays behind


def test_describe_record_has_every_field() -> None:
    line = describe_record(RECORD)
    assert line == (
        "TTFT 125 ms · prefill 812.4 t/s · decode 95.2 t/s · 31+12 tokens · "
        "sha256 b179c9523d0e · CPU · ngl 0"
    )
    assert describe_record({**RECORD, "stop_reason": "cancelled"}).endswith("stop: cancelled")
    assert "sha256 n/a" in describe_record({**RECORD, "model_sha256": None})
    # prompt tokens that came from the KV prefix cache are said
    assert " · 31+12 tokens (24 cached) · " in describe_record(
        {**RECORD, "prompt_tokens_cached": 24}
    )
    # speculation that ran: what was drafted and how much of it the model kept, after tokens
    spec = {**RECORD, "spec_mode": "ngram", "drafted_tokens": 40, "accepted_tokens": 30}
    assert " · 31+12 tokens · ngram drafts 30/40 accepted (75 %) · sha256 " in describe_record(spec)
    assert "drafts" not in describe_record({**RECORD, "spec_mode": "ngram", "drafted_tokens": 0})


def test_title_from_long_text() -> None:
    assert title_from("  a\n b  ") == "a b"
    long = title_from("word " * 40)
    assert len(long) == 48 and long.endswith("…")


def test_unknown_role_is_refused(store: ConversationStore) -> None:
    with pytest.raises(UserInputError):
        store.add_message(store.create().id, "tool", "x")
