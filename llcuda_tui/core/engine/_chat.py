"""Chat turns for any engine: the request, the context budget, and a reply buffer.

:class:`ReplyStream` is how a UI receives tokens without slowing generation: the engine
thread appends each chunk's text to a list (one ``list.append``, no lock, no wake-up) and the
UI drains whatever arrived on its own timer (10-20 Hz). :func:`plan_context` counts the exact
prompt tokens (system + history + the new turn, through the model's chat template) plus the
reply budget against the context, and says how many of the oldest turns would have to go;
it never drops them itself.

Works with anything that has the :class:`Engine` methods used here (``submit``,
``count_tokens``, ``info.n_ctx``): the local engine, or a remote worker's client.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

WARN_FRACTION = 0.85
"""The context meter warns from this share of the context on."""


class ChatEngine(Protocol):
    """What the chat needs of an engine (``Engine`` and a worker's ``RemoteEngine``)."""

    info: Any

    def submit(
        self,
        request: Any,
        on_chunk: Callable[[Any], None],
        on_error: Callable[[BaseException], None] | None = None,
    ) -> Any: ...

    def count_tokens(self, request: Any) -> int: ...

    def cancel(self) -> None: ...

    def close(self) -> None: ...


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


class ReplyStream:
    """One generation's text, collected on the engine thread and drained by the UI.

    ``on_chunk`` runs on the engine thread for every token: it only appends. Everything
    else (joining, counting, rates) happens when the UI calls :meth:`drain`.
    """

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._read = 0
        self.record: Any = None
        """The generation's RunRecord, once it has finished."""
        self.error: BaseException | None = None
        self.handle: Any = None
        self.started = time.perf_counter()

    @classmethod
    def start(cls, engine: ChatEngine, request: Any) -> ReplyStream:
        stream = cls()
        stream.handle = engine.submit(request, stream.on_chunk, stream.on_error)
        return stream

    def on_chunk(self, chunk: Any) -> None:
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
