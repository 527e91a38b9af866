"""Tool calls parsed out of a model's reply, whole (:func:`parse_reply`) or as it streams
(:class:`ToolCallStream`, which emits OpenAI's ``tool_calls`` deltas).

The formats the common chat templates teach their models:

* Hermes / Qwen (and our generic prompt): ``<tool_call>{"name": ..., "arguments": {...}}
  </tool_call>``, one block per call;
* Llama 3.x: ``{"name": ..., "parameters": {...}}`` (after ``<|python_tag|>``, several
  separated by ``;``), or ``<function=name>{...}</function>``;
* Mistral: ``[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]`` and the newer
  ``[TOOL_CALLS]name[ARGS]{...}``;
* a generic fallback: a reply that is nothing but JSON (in a code fence or not) holding call
  objects (``name`` + ``arguments`` / ``parameters``, or OpenAI's ``{"function": {...}}``).

Control tokens such as Mistral's ``[TOOL_CALLS]`` and Llama's ``<|python_tag|>`` are not in a
reply's text (the engine drops them), which leaves their JSON for the fallback. A call counts
only when it names one of the request's functions and its arguments are a JSON object;
anything else stays text, so a reply is never lost to the parser.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

TAGS = ("<tool_call>", "[TOOL_CALLS]", "<|python_tag|>", "<function=")
"""Texts that open tool calls anywhere in a reply."""
JSON_OPENERS = ("{", "[", "```")
"""Openers of a reply that may be bare JSON calls (only at its start)."""

_DECODER = json.JSONDecoder()
_MISTRAL_NAMED = re.compile(r"\s*([A-Za-z0-9_.-]{1,64})(?:\[CALL_ID\]([A-Za-z0-9_-]+))?\[ARGS\]")
_FUNCTION_TAG = re.compile(r"<function=([A-Za-z0-9_.-]{1,64})>")
_FENCE = re.compile(r"^```[A-Za-z]*\s*(.*?)\s*```$", re.DOTALL)


@dataclass(frozen=True)
class ToolCall:
    """One call: its function's name and arguments (a JSON object, as text)."""

    name: str
    arguments: str
    id: str

    def to_openai(self) -> dict[str, Any]:
        """``{"id", "type": "function", "function": {"name", "arguments"}}``."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass(frozen=True)
class ParsedReply:
    content: str | None
    """The text that is not calls: all of it when there are none; else stripped, None when
    only whitespace is left."""
    calls: tuple[ToolCall, ...]


def parse_reply(text: str, names: Collection[str], parallel: bool = True) -> ParsedReply:
    """The calls in ``text`` to the functions ``names`` (only the first unless ``parallel``)
    and the rest of the text."""
    calls, rest = _parse(text, names)
    if not calls:
        return ParsedReply(text, ())
    return ParsedReply(rest.strip() or None, tuple(calls if parallel else calls[:1]))


def _parse(text: str, names: Collection[str]) -> tuple[list[ToolCall], str]:
    start = _first_tag(text)
    if start < 0:
        calls = _bare_json(text, names)
        if calls:
            return calls, ""
        return _array_head(text, names)
    calls, rest = _tagged(text[start:], names)
    return calls, text[:start] + rest


def _first_tag(text: str) -> int:
    found = [i for i in (text.find(tag) for tag in TAGS) if i >= 0]
    return min(found, default=-1)


def _bare_json(text: str, names: Collection[str]) -> list[ToolCall]:
    """Calls of a reply that is only JSON: an object, an array of them, ``;``-separated
    objects (Llama 3.x), or ``{"tool_calls": [...]}``; empty when it is anything else."""
    body = text.strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1)
    if not body.startswith(("{", "[")):
        return []
    values, pos = [], 0
    while pos < len(body):
        try:
            value, pos = _DECODER.raw_decode(body, pos)
        except (ValueError, RecursionError):
            return []
        values.append(value)
        pos = _skip(body, pos, ";")
    calls = []
    for value in values:
        found = _calls_in(value, names)
        if found is None:
            return []
        calls.extend(found)
    return calls


def _array_head(text: str, names: Collection[str]) -> tuple[list[ToolCall], str]:
    """The whole calls at the start of a JSON array of calls cut short (``max_tokens``), and
    the text from the first one that is not whole; ``([], text)`` if there are none."""
    body = text.lstrip()
    if not body.startswith("["):
        return [], text
    calls: list[ToolCall] = []
    pos = _skip(body, 1)
    while pos < len(body):
        try:
            value, end = _DECODER.raw_decode(body, pos)
        except (ValueError, RecursionError):
            break
        found = _calls_in(value, names)
        if found is None:
            break
        calls.extend(found)
        pos = _skip(body, end, ",")
    return (calls, body[pos:]) if calls else ([], text)


def _skip(text: str, pos: int, separators: str = "") -> int:
    while pos < len(text) and (text[pos].isspace() or text[pos] in separators):
        pos += 1
    return pos


def _tagged(text: str, names: Collection[str]) -> tuple[list[ToolCall], str]:
    """Calls from ``text`` (which starts with a tag) on; the text that is not calls."""
    calls: list[ToolCall] = []
    rest: list[str] = []
    pos = 0
    while pos < len(text):
        start = _first_tag(text[pos:])
        if start < 0:
            rest.append(text[pos:])
            break
        rest.append(text[pos : pos + start])
        pos += start
        found, end = _one_tag(text, pos, names)
        if found is None:  # not a call after all: the tag stays text
            tag_end = pos + 1
            rest.append(text[pos:tag_end])
            pos = tag_end
            continue
        calls.extend(found)
        pos = end
    return calls, "".join(rest)


def _one_tag(text: str, pos: int, names: Collection[str]) -> tuple[list[ToolCall] | None, int]:
    """The calls of the tagged block at ``pos`` and where it ends, or (None, pos)."""
    if text.startswith("<tool_call>", pos):
        inner_start = pos + len("<tool_call>")
        close = text.find("</tool_call>", inner_start)
        end = len(text) if close < 0 else close + len("</tool_call>")
        found = _bare_json(text[inner_start : len(text) if close < 0 else close], names)
        return (found, end) if found else (None, pos)
    if text.startswith("<function=", pos):
        m = _FUNCTION_TAG.match(text, pos)
        if m is None:
            return None, pos
        close = text.find("</function>", m.end())
        end = len(text) if close < 0 else close + len("</function>")
        args = _decode_all(text[m.end() : len(text) if close < 0 else close])
        call = _call(m.group(1), args, names)
        return ([call], end) if call else (None, pos)
    if text.startswith("[TOOL_CALLS]", pos):
        return _mistral(text, pos + len("[TOOL_CALLS]"), names)
    # <|python_tag|>: Llama 3.x JSON calls, ';'-separated
    start = pos + len("<|python_tag|>")
    found = _bare_json(text[start:], names)
    return (found, len(text)) if found else (None, pos)


def _mistral(text: str, pos: int, names: Collection[str]) -> tuple[list[ToolCall] | None, int]:
    at = _skip(text, pos)
    if text.startswith("[", at):
        try:
            value, end = _DECODER.raw_decode(text, at)
        except (ValueError, RecursionError):
            return None, pos
        found = _calls_in(value, names)
        return (found, end) if found else (None, pos)
    calls: list[ToolCall] = []
    while True:  # name[ARGS]{...} (several, each after its own [TOOL_CALLS] or not)
        m = _MISTRAL_NAMED.match(text, at)
        if m is None:
            break
        try:
            args, end = _DECODER.raw_decode(text, _skip(text, m.end()))
        except (ValueError, RecursionError):
            break
        call = _call(m.group(1), args, names)
        if call is None:
            break
        calls.append(call)
        at = _skip(text, end)
        if text.startswith("[TOOL_CALLS]", at):
            at += len("[TOOL_CALLS]")
    return (calls, at) if calls else (None, pos)


_BAD = object()


def _decode_all(text: str) -> Any:
    """The one JSON value ``text`` holds (whitespace around it allowed), else ``_BAD``."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return _BAD


def _calls_in(value: Any, names: Collection[str]) -> list[ToolCall] | None:
    """The calls a JSON value describes, or None when it is not (only) calls."""
    if isinstance(value, dict) and isinstance(value.get("tool_calls"), list):
        value = value["tool_calls"]
    items = value if isinstance(value, list) else [value]
    if not items:
        return None
    calls = []
    for item in items:
        if not isinstance(item, dict):
            return None
        if isinstance(item.get("function"), dict):  # OpenAI's shape
            item = item["function"]
        args = item.get("arguments", item.get("parameters", {}))
        call = _call(item.get("name"), args, names)
        if call is None:
            return None
        calls.append(call)
    return calls


def _call(name: Any, arguments: Any, names: Collection[str]) -> ToolCall | None:
    if not isinstance(name, str) or name not in names:
        return None
    if isinstance(arguments, str):  # some models write the arguments as a JSON string
        arguments = _decode_all(arguments)
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        return None
    return ToolCall(name, json.dumps(arguments, ensure_ascii=False), new_call_id())


def new_call_id() -> str:
    return f"call_{secrets.token_hex(12)}"


class ToolCallStream:
    """A streamed reply's deltas: text is passed on as ``{"content": ...}`` deltas as it comes,
    except what may be the start of a call, which is held; from a tag on (or from the start of
    a reply that opens like JSON) everything is held and parsed when the reply ends
    (:meth:`finish`), giving each call as OpenAI streams one: a delta with its ``index``,
    ``id``, ``type`` and ``function.name`` (``arguments`` empty), then one with its
    ``arguments``. The calls and the text come out as :func:`parse_reply` finds them."""

    def __init__(self, names: Collection[str], parallel: bool = True) -> None:
        self.names = names
        self.parallel = parallel
        self.calls: tuple[ToolCall, ...] = ()
        self._held = ""
        self._holding_all = False
        self._sent_text = False

    def feed(self, text: str) -> list[dict[str, Any]]:
        """Deltas to send for the next piece of the reply (often none or one)."""
        if self._holding_all:
            self._held += text
            return []
        held = self._held + text
        start = _first_tag(held)
        if start >= 0:
            self._holding_all = True
            self._held = held[start:]
            return self._content(held[:start])
        if not self._sent_text:
            lead = held.lstrip()
            if not lead or any(o.startswith(lead[: len(o)]) for o in JSON_OPENERS):
                if lead.startswith(JSON_OPENERS):
                    self._holding_all = True
                self._held = held
                return []
        keep = _partial_tag(held)
        self._held = held[len(held) - keep :]
        return self._content(held[: len(held) - keep])

    def finish(self) -> list[dict[str, Any]]:
        """The last deltas: held text, and the calls (then in :attr:`calls`)."""
        held, self._held = self._held, ""
        reply = parse_reply(held, self.names, self.parallel)
        self.calls = reply.calls
        out = self._content(reply.content or "")
        for index, call in enumerate(reply.calls):
            head = {"name": call.name, "arguments": ""}
            out.append(
                {"tool_calls": [{"index": index, "id": call.id, "type": "function",
                                 "function": head}]}
            )  # fmt: skip
            out.append(
                {"tool_calls": [{"index": index, "function": {"arguments": call.arguments}}]}
            )
        return out

    def _content(self, text: str) -> list[dict[str, Any]]:
        if not text:
            return []
        self._sent_text = self._sent_text or bool(text.strip())
        return [{"content": text}]


def _partial_tag(text: str) -> int:
    """Length of the longest end of ``text`` that a tag starts with."""
    best = 0
    for tag in TAGS:
        for n in range(min(len(tag) - 1, len(text)), best, -1):
            if text.endswith(tag[:n]):
                best = n
                break
    return best
