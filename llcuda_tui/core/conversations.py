"""Chat conversations in one SQLite file under the data dir (``conversations.sqlite``).

A conversation has a title, the model it last used, a system prompt and its own sampling
settings; its messages are numbered turns (``seq``), each assistant turn with the run record
of the generation that wrote it. Regenerating or editing the last user turn cuts the tail
(:meth:`ConversationStore.truncate`) and appends again. System-prompt presets are built in,
plus the user's own (kept in the same file). Nothing here imports Textual.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from llcuda_tui.core import files
from llcuda_tui.core.config import Paths, SamplingDefaults
from llcuda_tui.core.db import SqliteStore
from llcuda_tui.core.engine import SamplingParams, SamplingValues
from llcuda_tui.core.errors import LlcudaError, UserInputError

SCHEMA_VERSION = 1
DEFAULT_TITLE = "New chat"
TITLE_CHARS = 48
_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    title TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    model TEXT,
    system_prompt TEXT NOT NULL DEFAULT '',
    settings_json TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    created_at REAL NOT NULL,
    model TEXT,
    record_json TEXT,
    UNIQUE (conversation_id, seq)
);
CREATE TABLE IF NOT EXISTS presets (
    name TEXT PRIMARY KEY,
    text TEXT NOT NULL
);
"""

BUILTIN_PRESETS: dict[str, str] = {
    "none": "",
    "assistant": "You are a helpful assistant. Answer clearly and concisely.",
    "coder": (
        "You are an expert programmer. Answer with correct, idiomatic code in fenced Markdown "
        "blocks and a short explanation."
    ),
    "terse": "Answer in as few words as possible.",
    "tutor": "You are a patient tutor. Explain step by step and check understanding.",
}
ROLES = ("system", "user", "assistant")


class ConversationStoreError(LlcudaError):
    """The conversation store cannot be read or written."""


@dataclass(frozen=True)
class ChatSettings(SamplingValues):
    """Sampling and reply length of one conversation."""

    max_tokens: int = 512
    """Reply budget: the most tokens one reply may have."""

    def __post_init__(self) -> None:
        self.sampling()  # validates the sampling values
        if self.max_tokens < 1:
            raise UserInputError("max tokens must be >= 1")

    @classmethod
    def from_defaults(cls, d: SamplingDefaults) -> ChatSettings:
        return cls(**{f.name: getattr(d, f.name) for f in fields(cls)})

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], base: ChatSettings | None = None) -> ChatSettings:
        """``base`` with the known keys of ``d`` applied (unknown keys are ignored)."""
        base = base or cls()
        known = {f.name: type(getattr(base, f.name)) for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in d.items():
            kind = known.get(key)
            if kind is None:
                continue
            try:
                values[key] = kind(value)
            except (TypeError, ValueError):
                raise UserInputError(
                    f"{key.replace('_', ' ')}: '{value}' is not a number"
                ) from None
        return replace(base, **values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def sampling(self) -> SamplingParams:
        return SamplingParams(**self.sampling_values())


@dataclass(frozen=True)
class Conversation:
    id: int
    title: str
    created_at: float
    updated_at: float
    model: str | None = None
    system_prompt: str = ""
    settings: ChatSettings = field(default_factory=ChatSettings)


@dataclass(frozen=True)
class Message:
    id: int
    conversation_id: int
    seq: int
    role: str
    content: str
    created_at: float
    model: str | None = None
    record: dict[str, Any] | None = None
    """The run record of the generation that wrote an assistant turn."""


def store_path(paths: Paths) -> Path:
    return paths.data_dir / "conversations.sqlite"


class ConversationStore(SqliteStore):
    """Conversations, messages and presets in SQLite (open, use, ``close``)."""

    SCHEMA = _SCHEMA
    SCHEMA_VERSION = SCHEMA_VERSION
    LABEL = "conversation store"
    ERROR = ConversationStoreError

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        super().__init__(path, check_same_thread=False)

    @classmethod
    def open(cls, paths: Paths, clock: Callable[[], float] = time.time) -> ConversationStore:
        return cls(store_path(paths), clock)

    # --- conversations ----------------------------------------------------------------------

    def create(
        self,
        title: str = DEFAULT_TITLE,
        model: str | None = None,
        system_prompt: str = "",
        settings: ChatSettings | None = None,
    ) -> Conversation:
        now = self._clock()
        settings = settings or ChatSettings()
        with self._errors("create a conversation"), self._db:
            cur = self._db.execute(
                "INSERT INTO conversations (title, created_at, updated_at, model, system_prompt,"
                " settings_json) VALUES (?, ?, ?, ?, ?, ?)",
                (title, now, now, model, system_prompt, json.dumps(settings.to_dict())),
            )
        return self.get(int(cur.lastrowid or 0))

    def get(self, conversation_id: int) -> Conversation:
        with self._errors("read a conversation"):
            row = self._db.execute(
                "SELECT id, title, created_at, updated_at, model, system_prompt, settings_json"
                " FROM conversations WHERE id = ?",
                (conversation_id,),
            ).fetchone()
        if row is None:
            raise UserInputError(
                f"no conversation {conversation_id} (deleted, perhaps in another window): "
                "nothing was saved to it"
            )
        return _conversation(row)

    def conversations(self, query: str = "", limit: int = 500) -> list[Conversation]:
        """Conversations, most recently updated first; ``query`` matches titles and messages."""
        sql = (
            "SELECT id, title, created_at, updated_at, model, system_prompt, settings_json"
            " FROM conversations"
        )
        args: list[Any] = []
        if query.strip():
            pattern = "%" + _escape_like(query.strip()) + "%"
            sql += (
                " WHERE title LIKE ? ESCAPE '\\' OR id IN (SELECT conversation_id FROM messages"
                " WHERE content LIKE ? ESCAPE '\\')"
            )
            args += [pattern, pattern]
        sql += " ORDER BY updated_at DESC, id DESC LIMIT ?"
        args.append(limit)
        with self._errors("list conversations"):
            rows = self._db.execute(sql, args).fetchall()
        return [_conversation(r) for r in rows]

    def rename(self, conversation_id: int, title: str) -> Conversation:
        title = " ".join(title.split())
        if not title:
            raise UserInputError("a conversation needs a title")
        return self._update(conversation_id, title=title)

    def update(
        self,
        conversation_id: int,
        *,
        model: str | None = None,
        system_prompt: str | None = None,
        settings: ChatSettings | None = None,
    ) -> Conversation:
        """Set the model, system prompt or settings (``None`` leaves a field as it is)."""
        values: dict[str, Any] = {}
        if model is not None:
            values["model"] = model
        if system_prompt is not None:
            values["system_prompt"] = system_prompt
        if settings is not None:
            values["settings_json"] = json.dumps(settings.to_dict())
        return self._update(conversation_id, **values)

    def _update(self, conversation_id: int, **values: Any) -> Conversation:
        self.get(conversation_id)
        if values:
            cols = ", ".join(f"{k} = ?" for k in values)
            with self._errors("update a conversation"), self._db:
                self._db.execute(
                    f"UPDATE conversations SET {cols}, updated_at = ? WHERE id = ?",
                    (*values.values(), self._clock(), conversation_id),
                )
        return self.get(conversation_id)

    def delete(self, conversation_id: int) -> None:
        with self._errors("delete a conversation"), self._db:
            self._db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))

    # --- messages ---------------------------------------------------------------------------

    def messages(self, conversation_id: int) -> list[Message]:
        with self._errors("read messages"):
            rows = self._db.execute(
                "SELECT id, conversation_id, seq, role, content, created_at, model, record_json"
                " FROM messages WHERE conversation_id = ? ORDER BY seq",
                (conversation_id,),
            ).fetchall()
        return [_message(r) for r in rows]

    def add_message(
        self,
        conversation_id: int,
        role: str,
        content: str,
        *,
        model: str | None = None,
        record: Mapping[str, Any] | None = None,
    ) -> Message:
        """Append a turn; the first user turn of an untitled conversation becomes its title."""
        if role not in ROLES:
            raise UserInputError(f"unknown role '{role}'")
        conv = self.get(conversation_id)
        now = self._clock()
        with self._errors("add a message"), self._db:
            seq = self._db.execute(
                "SELECT COALESCE(MAX(seq), -1) + 1 FROM messages WHERE conversation_id = ?",
                (conversation_id,),
            ).fetchone()[0]
            cur = self._db.execute(
                "INSERT INTO messages (conversation_id, seq, role, content, created_at, model,"
                " record_json) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    conversation_id,
                    seq,
                    role,
                    content,
                    now,
                    model,
                    json.dumps(dict(record)) if record is not None else None,
                ),
            )
            title = conv.title
            if role == "user" and conv.title == DEFAULT_TITLE:
                title = title_from(content)
            self._db.execute(
                "UPDATE conversations SET updated_at = ?, title = ? WHERE id = ?",
                (now, title, conversation_id),
            )
        return Message(
            int(cur.lastrowid or 0),
            conversation_id,
            seq,
            role,
            content,
            now,
            model,
            dict(record) if record is not None else None,
        )

    def truncate(self, conversation_id: int, from_seq: int) -> None:
        """Delete the turns from ``from_seq`` on (regenerate, edit the last user turn)."""
        with self._errors("delete messages"), self._db:
            self._db.execute(
                "DELETE FROM messages WHERE conversation_id = ? AND seq >= ?",
                (conversation_id, from_seq),
            )
            self._db.execute(
                "UPDATE conversations SET updated_at = ? WHERE id = ?",
                (self._clock(), conversation_id),
            )

    # --- presets ----------------------------------------------------------------------------

    def presets(self) -> dict[str, str]:
        """Built-in system-prompt presets, then the user's (which may override a built-in)."""
        with self._errors("read presets"):
            rows = self._db.execute("SELECT name, text FROM presets ORDER BY name").fetchall()
        return {**BUILTIN_PRESETS, **dict(rows)}

    def save_preset(self, name: str, text: str) -> None:
        name = name.strip()
        if not name:
            raise UserInputError("a preset needs a name")
        with self._errors("save a preset"), self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO presets (name, text) VALUES (?, ?)", (name, text)
            )

    def delete_preset(self, name: str) -> None:
        with self._errors("delete a preset"), self._db:
            self._db.execute("DELETE FROM presets WHERE name = ?", (name,))


# --- history editing -------------------------------------------------------------------------


def last_user_turn(messages: list[Message]) -> Message | None:
    return next((m for m in reversed(messages) if m.role == "user"), None)


def regenerate_point(messages: list[Message]) -> Message | None:
    """The user turn a regenerate answers again (the last one); what follows it goes."""
    return last_user_turn(messages)


def title_from(text: str) -> str:
    words = " ".join(text.split())
    if len(words) <= TITLE_CHARS:
        return words or DEFAULT_TITLE
    return words[: TITLE_CHARS - 1].rstrip() + "…"


# --- export ----------------------------------------------------------------------------------


def export_markdown(conv: Conversation, messages: list[Message]) -> str:
    """The conversation as Markdown: title, model, system prompt, turns, run records."""
    created = time.strftime("%Y-%m-%d %H:%M", time.localtime(conv.created_at))
    out = [f"# {conv.title}", "", f"- created: {created}"]
    if conv.model:
        out.append(f"- model: {conv.model}")
    s = conv.settings
    out.append(
        f"- sampling: temperature {s.temperature:g}, top-k {s.top_k}, top-p {s.top_p:g}, "
        f"min-p {s.min_p:g}, max tokens {s.max_tokens}"
    )
    if conv.system_prompt:
        out += ["", "## System", "", conv.system_prompt]
    for m in messages:
        out += ["", f"## {m.role.capitalize()}", "", m.content]
        if m.record:
            out += ["", f"_{describe_record(m.record)}_"]
    return "\n".join(out) + "\n"


def write_export(conv: Conversation, messages: list[Message], directory: Path) -> Path:
    """Write :func:`export_markdown` to ``directory/conversation-<id>.md`` (``-2.md``, … when
    that exists: an earlier export is never overwritten); the path written."""
    data = export_markdown(conv, messages).encode("utf-8")
    return files.write_new(directory, f"conversation-{conv.id}.md", data)


def describe_record(r: Mapping[str, Any]) -> str:
    """One line: TTFT, prefill and decode t/s, tokens (and how many of the prompt's came from
    the KV cache), drafted/accepted tokens when speculation ran, model sha256 prefix, backend,
    ngl."""
    sha = r.get("model_sha256")
    cached = int(r.get("prompt_tokens_cached") or 0)
    parts = [
        f"TTFT {float(r.get('ttft_s') or 0) * 1000:.0f} ms",
        f"prefill {float(r.get('prefill_tokens_per_s') or 0):.1f} t/s",
        f"decode {float(r.get('decode_tokens_per_s') or 0):.1f} t/s",
        f"{r.get('prompt_tokens', '?')}+{r.get('generated_tokens', '?')} tokens"
        + (f" ({cached} cached)" if cached else ""),
        f"sha256 {sha[:12]}" if sha else "sha256 n/a",
        str(r.get("backend") or "?"),
        f"ngl {r.get('n_gpu_layers', '?')}",
    ]
    drafted = int(r.get("drafted_tokens") or 0)
    if drafted:  # speculation ran: how much of what was drafted the model kept
        accepted = int(r.get("accepted_tokens") or 0)
        parts.insert(
            4,
            f"{r.get('spec_mode') or 'spec'} drafts {accepted}/{drafted} accepted "
            f"({100 * accepted / drafted:.0f} %)",
        )
    reason = r.get("stop_reason")
    if reason and reason != "eos":
        parts.append(f"stop: {reason}")
    return " · ".join(parts)


# --- rows ------------------------------------------------------------------------------------


def _conversation(row: tuple[Any, ...]) -> Conversation:
    cid, title, created, updated, model, system_prompt, settings_json = row
    try:
        settings = ChatSettings.from_dict(json.loads(settings_json or "{}"))
    except (ValueError, UserInputError):
        settings = ChatSettings()
    return Conversation(cid, title, created, updated, model, system_prompt or "", settings)


def _message(row: tuple[Any, ...]) -> Message:
    mid, cid, seq, role, content, created, model, record_json = row
    record = json.loads(record_json) if record_json else None
    return Message(mid, cid, seq, role, content, created, model, record)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
