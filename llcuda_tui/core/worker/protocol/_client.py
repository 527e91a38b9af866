"""Building requests and reading replies and streams (client side)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import fields
from typing import Any

from llcuda_tui.core.engine import (
    GenerationRequest,
    RunRecord,
)
from llcuda_tui.core.errors import UserInputError
from llcuda_tui.core.worker.protocol._common import CHAT_PATH, COMPLETIONS_PATH

# --- building requests and reading streams (client side) --------------------------------------


def request_payload(request: GenerationRequest, model: str | None) -> tuple[str, dict[str, Any]]:
    """(path, JSON body) of a streamed request for ``request`` (chat when it has messages).
    A request with tools is refused: this stream carries text, and the worker answers tool
    calls as ``tool_calls`` deltas (send those requests with an OpenAI client)."""
    if request.tools:
        raise UserInputError(
            "a remote engine streams text only: send requests with tools to the worker's "
            f"{CHAT_PATH} with an OpenAI client"
        )
    if request.logprobs is not None:
        raise UserInputError(
            "a remote engine streams text only: ask the worker for logprobs with an OpenAI client"
        )
    s = request.sampling
    body: dict[str, Any] = {
        "model": model or "default",
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": request.max_tokens,
        "temperature": s.temperature,
        "top_k": s.top_k,
        "top_p": s.top_p,
        "min_p": s.min_p,
        "repeat_penalty": s.repeat_penalty,
        "repeat_last_n": s.repeat_last_n,
        "seed": s.seed,
    }
    if s.logit_bias:
        body["logit_bias"] = {str(k): v for k, v in s.logit_bias.items()}
    if s.grammar is not None:
        body["grammar"] = s.grammar
    if s.presence_penalty:
        body["presence_penalty"] = s.presence_penalty
    if s.frequency_penalty:
        body["frequency_penalty"] = s.frequency_penalty
    if request.stop:
        body["stop"] = list(request.stop)
    if request.ignore_eos:
        body["ignore_eos"] = True
    if request.messages is not None:
        body["messages"] = [dict(m) for m in request.messages]
        return CHAT_PATH, body
    body["prompt"] = list(request.tokens) if request.tokens is not None else request.prompt
    return COMPLETIONS_PATH, body


def iter_events(lines: Iterable[str]) -> Iterator[dict[str, Any] | None]:
    """Parsed ``data:`` events of a stream; ``None`` for a heartbeat; stops at ``[DONE]``."""
    for line in lines:
        if not line:
            continue
        if line.startswith(":"):
            yield None
            continue
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        try:
            event = json.loads(data)
        except json.JSONDecodeError:
            raise UserInputError(f"the server sent a non-JSON event: {data[:80]}") from None
        if isinstance(event, dict):
            yield event


def event_text(event: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(text, finish_reason) of one chunk event (chat or completion shape); text is None for
    events that carry no token (the role event, the usage event)."""
    choices = event.get("choices") or []
    if not choices:
        return None, None
    choice = choices[0]
    reason = choice.get("finish_reason")
    if "delta" in choice:
        delta = choice.get("delta") or {}
        if "content" not in delta or (delta.get("role") and not delta.get("content")):
            return (None if reason is None else ""), reason
        return delta.get("content") or "", reason
    return choice.get("text") or "", reason


def record_from_dict(d: Mapping[str, Any]) -> RunRecord:
    """A RunRecord sent by a worker (unknown keys are ignored, missing ones zero)."""
    known = {f.name: f for f in fields(RunRecord)}
    values: dict[str, Any] = {}
    for name, f in known.items():
        if name in d:
            values[name] = d[name]
        elif f.type in ("int", int):
            values[name] = 0
        elif f.type in ("float", float):
            values[name] = 0.0
        elif name == "token_times_s":
            values[name] = []
        elif name == "stop_reason":
            values[name] = "stop"
        else:
            values[name] = None if "None" in str(f.type) else ""
    return RunRecord(**values)
