"""Shaping replies: whole responses, server-sent events, usage and logprobs (server side)."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from llcuda_tui.core.engine import (
    RunRecord,
    TokenLogprob,
)
from llcuda_tui.core.worker.protocol._common import DONE, FINISH_REASONS, error_body

# --- shaping responses (server side) ----------------------------------------------------------


def new_id(kind: str) -> str:
    return f"{kind}-{secrets.token_hex(12)}"


def usage(record: RunRecord, *more: RunRecord, n: int = 1) -> dict[str, Any]:
    """OpenAI's usage object; ``cached_tokens`` counts the prompt tokens the prefix cache (or a
    restored KV state) did not have to decode, as OpenAI reports its prompt caching. With the
    records of several choices (``n`` per prompt, in index order) each prompt counts once and
    the completion tokens are summed."""
    records = (record, *more)
    firsts = records[::n]
    prompt = sum(r.prompt_tokens for r in firsts)
    completion = sum(r.generated_tokens for r in records)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": sum(r.prompt_tokens_cached for r in firsts)},
    }


def chat_logprobs(entries: Iterable[TokenLogprob]) -> dict[str, Any]:
    """A chat choice's (or chunk's) ``logprobs``: OpenAI's ``content`` list, ``bytes`` the
    token's UTF-8 bytes as integers."""

    def one(e: TokenLogprob) -> dict[str, Any]:
        return {"token": e.text, "logprob": e.logprob, "bytes": list(e.piece)}

    content = [{**one(e), "top_logprobs": [one(t) for t in e.top]} for e in entries]
    return {"content": content, "refusal": None}


def legacy_logprobs(entries: Sequence[TokenLogprob], offset: int) -> dict[str, Any]:
    """A completion choice's (or chunk's) ``logprobs`` in OpenAI's legacy shape: ``tokens``,
    ``token_logprobs``, ``top_logprobs`` (token text -> logprob; the likelier of two tokens
    of the same text) and ``text_offset`` (characters, from ``offset``)."""
    offsets, at = [], offset
    for e in entries:
        offsets.append(at)
        at += len(e.text)
    tops = []
    for e in entries:
        top: dict[str, float] = {}
        for t in e.top:
            top.setdefault(t.text, t.logprob)
        tops.append(top)
    return {
        "tokens": [e.text for e in entries],
        "token_logprobs": [e.logprob for e in entries],
        "top_logprobs": tops,
        "text_offset": offsets,
    }


class StreamShaper:
    """Server-sent events of one streamed request, in the chat or the completion shape. Choices
    other than 0 (``n``, prompt arrays) and tokens with logprobs take the general path; choice
    0's plain tokens a prebuilt template (the hot path)."""

    def __init__(
        self, chat: bool, model: str, include_usage: bool, logprobs: bool = False, n: int = 1
    ) -> None:
        self.chat = chat
        self.id = new_id("chatcmpl" if chat else "cmpl")
        self.created = int(time.time())
        self.model = model
        self.include_usage = include_usage
        self.logprobs = logprobs
        """Whether the request asked for logprobs (each token event then carries its own)."""
        self.n = n
        self._offsets: dict[int, int] = {}
        """Legacy logprobs: each choice's text offset so far."""
        obj = "chat.completion.chunk" if chat else "text_completion"
        head = {"id": self.id, "object": obj, "created": self.created, "model": model}
        self._head = _dumps(head)[:-1]
        if chat:
            self._token = (
                "data: " + self._head + ',"choices":[{"index":0,"delta":{"content":',
                '},"logprobs":null,"finish_reason":null}]}\n\n',
            )
        else:
            self._token = (
                "data: " + self._head + ',"choices":[{"index":0,"text":',
                ',"logprobs":null,"finish_reason":null}]}\n\n',
            )

    def opening(self, choices: int = 1) -> bytes:
        """The first event (chat: the assistant role of each choice), sent before any token."""
        if not self.chat:
            return b""
        delta = {"role": "assistant", "content": ""}
        return self._event(
            [{"index": i, "delta": delta, "logprobs": None, "finish_reason": None}
             for i in range(choices)]
        )  # fmt: skip

    def token(
        self, text: str, index: int = 0, logprobs: Sequence[TokenLogprob] | None = None
    ) -> bytes:
        """One generated token's text (possibly empty) of choice ``index``, with the logprobs of
        the tokens it carries when the request asked for them."""
        if index == 0 and not self.logprobs:
            return (self._token[0] + _dumps(text) + self._token[1]).encode()
        choice: dict[str, Any] = {"index": index}
        if self.chat:
            choice["delta"] = {"content": text}
        else:
            choice["text"] = text
        choice["logprobs"] = self._logprobs(index, text, logprobs or ())
        choice["finish_reason"] = None
        return self._event([choice])

    def _logprobs(
        self, index: int, text: str, entries: Sequence[TokenLogprob]
    ) -> dict[str, Any] | None:
        if not self.logprobs:
            return None
        if self.chat:
            return chat_logprobs(entries)
        at = self._offsets.get(index, 0)
        self._offsets[index] = at + len(text)
        return legacy_logprobs(entries, at)

    def delta(self, delta: Mapping[str, Any], index: int = 0) -> bytes:
        """A chat event of any delta (``{"tool_calls": [...]}``, ``{"content": ...}``)."""
        return self._event([{"index": index, "delta": dict(delta), "logprobs": None,
                             "finish_reason": None}])  # fmt: skip

    def closing(self, tail: str, record: RunRecord, tool_calls: bool = False) -> bytes:
        """The final event(s) of a one-choice stream: leftover text, the finish reason
        (``tool_calls`` when the reply made calls), our record, usage, [DONE]."""
        return self.finish(0, tail, record, tool_calls) + self.ending([record])

    def finish(
        self,
        index: int,
        tail: str,
        record: RunRecord,
        tool_calls: bool = False,
        logprobs: Sequence[TokenLogprob] = (),
    ) -> bytes:
        """Choice ``index``'s last event: leftover text (and its tokens' logprobs), the finish
        reason, our record of that choice."""
        reason = finish_reason(record, tool_calls)
        lp = self._logprobs(index, tail, logprobs) if (tail or logprobs) else None
        if self.chat:
            choice = {
                "index": index,
                "delta": {"content": tail} if tail else {},
                "logprobs": lp,
                "finish_reason": reason,
            }
        else:
            choice = {"index": index, "text": tail, "logprobs": lp, "finish_reason": reason}
        return self._event([choice], llcuda={"record": record.to_dict()})

    def ending(self, records: Sequence[RunRecord]) -> bytes:
        """After every choice's last event: usage (when asked for) and [DONE]."""
        out = b""
        if self.include_usage:
            out += self._event([], usage=usage(*records, n=self.n))
        return out + DONE

    def error(self, message: str, status: int, code: str | None = None) -> bytes:
        """An error that happened after the stream started (the status line is already sent)."""
        return ("data: " + _dumps(error_body(message, status, code=code)) + "\n\n").encode() + DONE

    def _event(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        body = _dumps({"choices": choices, **extra})
        return ("data: " + self._head + "," + body[1:] + "\n\n").encode()


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def finish_reason(record: RunRecord, tool_calls: bool = False) -> str:
    """OpenAI's finish reason of a run: ``tool_calls`` for a reply that ended with calls
    (one cut off by ``max_tokens`` stays ``length``)."""
    reason = FINISH_REASONS.get(record.stop_reason, "stop")
    return "tool_calls" if tool_calls and reason == "stop" else reason


def whole_response(
    chat: bool,
    model: str,
    text: str | None,
    record: RunRecord,
    tool_calls: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """A non-streamed reply of one choice; a chat reply's ``tool_calls`` in OpenAI's shape
    (its ``text`` is then None when the calls are all it says)."""
    return whole_reply(chat, model, [reply_choice(chat, 0, text, record, tool_calls)], [record])


def reply_choice(
    chat: bool,
    index: int,
    text: str | None,
    record: RunRecord,
    tool_calls: Sequence[Mapping[str, Any]] = (),
    logprobs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One choice of a non-streamed reply (``logprobs`` already shaped: :func:`chat_logprobs`,
    :func:`legacy_logprobs`)."""
    reason = finish_reason(record, bool(tool_calls))
    if chat:
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if tool_calls:
            message["tool_calls"] = [dict(c) for c in tool_calls]
        return {"index": index, "message": message, "logprobs": logprobs, "finish_reason": reason}
    return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": reason}


def whole_reply(
    chat: bool,
    model: str,
    choices: list[dict[str, Any]],
    records: Sequence[RunRecord],
    n: int = 1,
) -> dict[str, Any]:
    """A non-streamed reply of ``choices`` (index order; ``n`` per prompt for usage); our
    extension carries choice 0's ``record`` and, with several, every choice's ``records``."""
    extension: dict[str, Any] = {"record": records[0].to_dict()}
    if len(records) > 1:
        extension["records"] = [r.to_dict() for r in records]
    return {
        "id": new_id("chatcmpl" if chat else "cmpl"),
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": usage(*records, n=n),
        "llcuda": extension,
    }
