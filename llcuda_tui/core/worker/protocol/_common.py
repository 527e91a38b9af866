"""The wire format's shared parts: paths, limits, the error shape and the parsed request's types."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from llcuda_tui.core.engine import (
    GenerationRequest,
    ToolSupport,
)
from llcuda_tui.core.errors import UserInputError

EXT_PREFIX = "/llcuda/v1"
"""Our extensions' paths start with this (OpenAI clients never ask for them)."""
CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"
HEARTBEAT_S = 0.5
HEARTBEAT = b": ping\n\n"
LOADING_HEARTBEAT = ": loading "
"""The heartbeat of a streamed request whose model is loading (or waiting for room) on a
worker of many models, the model's name after it (:func:`loading_heartbeat`): an SSE comment,
ignored as ``: ping`` is by every client; ours shows it (``RemoteEngine.loading``)."""
DONE = b"data: [DONE]\n\n"
MAX_STOP_STRINGS = 16
MAX_STOP_CHARS = 512
MAX_GRAMMAR_CHARS = 256 * 1024
MAX_MESSAGES = 4096
"""Most messages in one chat request (each is rendered by the chat template before the prompt's
length is known, so the count is capped up front)."""
MAX_TOOLS = 128
"""Most tools in one request (OpenAI's limit)."""
MAX_N = 8
"""Largest ``n`` (choices per prompt): each is a sequence of its own in the slot loop."""
MAX_CHOICES = 64
"""Most choices of one request (prompts times ``n``)."""
TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""A function name as OpenAI allows it."""
TOOL_CHOICES = ("auto", "none", "required")
FINISH_REASONS = {"eos": "stop", "stop": "stop", "length": "length", "cancelled": "length"}
"""Our stop reasons as OpenAI finish reasons (a request the server cancelled ends 'length')."""


class RequestError(UserInputError):
    """A request the server refuses with a 4xx and an OpenAI-style error body: ``param`` names
    the field at fault, ``code`` is OpenAI's string (None: the status's default code)."""

    def __init__(
        self, message: str, status: int = 400, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.param = param
        self.code = code


ERROR_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    503: "unavailable_error",
}
ERROR_CODES = {
    400: "invalid_value",
    401: "invalid_api_key",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    500: "internal_error",
    503: "unavailable",
}
"""OpenAI's ``code`` is a string clients key on (``context_length_exceeded``,
``invalid_api_key``, ``model_not_found``); these are the defaults per status."""


def error_body(
    message: str, status: int, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """``{"error": {...}}`` as the OpenAI API shapes it."""
    kind = ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    if code is None:
        code = ERROR_CODES.get(status, "invalid_request" if status < 500 else "server_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


SAMPLING_PARAMS = {
    "temperature": "temperature",
    "top-k": "top_k",
    "top-p": "top_p",
    "min-p": "min_p",
    "repeat penalty": "repeat_penalty",
    "presence penalty": "presence_penalty",
    "frequency penalty": "frequency_penalty",
    "repeat-last-n": "repeat_last_n",
    "seed": "seed",
}
"""The start of a SamplingParams complaint -> the request field it is about."""


@dataclass(frozen=True)
class Limits:
    """What one request may ask of the worker."""

    max_tokens: int
    """Largest ``max_tokens`` accepted (a larger one is a 400, not silently clipped)."""
    default_max_tokens: int
    """Used when a request names no ``max_tokens``."""


@dataclass(frozen=True)
class ToolPlan:
    """What a chat request asks of tools."""

    tools: tuple[dict[str, Any], ...]
    """OpenAI function tools, validated (``{"type": "function", "function": {...}}``)."""
    choice: str
    """``auto``, ``none`` (tools are not shown to the model), ``required``, or ``function``
    (named: ``name``)."""
    name: str | None = None
    parallel: bool = True
    """``parallel_tool_calls``: more than one call per reply."""

    @property
    def names(self) -> frozenset[str]:
        return frozenset(t["function"]["name"] for t in self.tools)

    @property
    def parses(self) -> bool:
        """Calls are parsed out of the reply (every choice but ``none``)."""
        return self.choice != "none"

    @property
    def constrained(self) -> bool:
        """A grammar makes the reply calls (``required``, named)."""
        return self.choice in ("required", "function")

    def grammar(self, support: ToolSupport) -> str:
        """The grammar of a constrained reply, in the format the model writes calls in."""
        from llcuda_tui.core.engine import tool_call_grammar

        functions = [
            t["function"]
            for t in self.tools
            if self.choice == "required" or t["function"]["name"] == self.name
        ]
        try:
            return tool_call_grammar(
                functions,
                wrap=support.wrap,
                arguments_key=support.arguments_key,
                several=self.choice == "required" and self.parallel,
            )
        except UserInputError as exc:
            raise RequestError(f"tools: {exc}", param="tools") from None


@dataclass(frozen=True)
class ParsedRequest:
    """A validated OpenAI request: the engine's request plus how to answer it."""

    request: GenerationRequest
    stream: bool
    include_usage: bool
    model: str | None
    tools: ToolPlan | None = None
    """Tools asked for (None: none were)."""
    choices: tuple[GenerationRequest, ...] = ()
    """Every choice's request in index order (prompt ``i``'s ``j``-th choice is ``i * n + j``);
    empty: ``request`` is the only one."""
    n: int = 1
    """Choices per prompt (``n``)."""
    echo: bool = False
    """Completions: the prompt's text comes first in each choice's text."""
    suffix: str | None = None
    """Completions: the text after the completion (fill-in-the-middle)."""

    @property
    def requests(self) -> tuple[GenerationRequest, ...]:
        return self.choices or (self.request,)


def loading_heartbeat(model: str) -> bytes:
    """The heartbeat sent while ``model`` loads (cut at a line break: one would end the
    comment)."""
    first = model.splitlines()[0] if model else ""
    return f"{LOADING_HEARTBEAT}{first}\n\n".encode()
