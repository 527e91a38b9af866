"""The worker's wire format, shared by the server and the client: OpenAI-shaped requests and
responses, server-sent events, and our extensions.

Tool calls (``tools``, ``tool_choice``, ``parallel_tool_calls``) are validated here into a
:class:`ToolPlan`; the template renders the tools (``engine._toolprompt``) and
:mod:`.toolcalls` parses the calls out of the reply.

Extensions to the OpenAI shapes (ignored by OpenAI clients): requests may carry ``top_k``,
``min_p``, ``repeat_penalty``, ``repeat_last_n`` and ``ignore_eos`` (as ``llama-server``
accepts them); the last chunk of a stream and a whole response carry ``"llcuda": {"record":
RunRecord}``. A stream sends one event per generated token (its text may be empty mid UTF-8
sequence or while a stop string is being matched) and a comment line (``: ping``) every
:data:`HEARTBEAT_S` seconds while nothing else is sent, so a client notices a dead worker fast.

One module on purpose (about 600 lines): it is the wire format, both directions of it, and
the server's parsing and the client's reading of the same fields are checked against each
other best when they sit side by side; split, a field renamed on one side would hide in
another file.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from llcuda_tui.core.config import SamplingDefaults
from llcuda_tui.core.engine import (
    MAX_LOGPROBS,
    GenerationRequest,
    RunRecord,
    SamplingParams,
    TokenLogprob,
    ToolSupport,
)
from llcuda_tui.core.errors import UserInputError
from llcuda_tui.core.unicode import find_bad_text

EXT_PREFIX = "/llcuda/v1"
"""Our extensions' paths start with this (OpenAI clients never ask for them)."""
CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"
HEARTBEAT_S = 0.5
HEARTBEAT = b": ping\n\n"
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


# --- parsing requests (server side) -----------------------------------------------------------


def parse_body(raw: bytes) -> dict[str, Any]:
    """The JSON object in ``raw``, or a RequestError saying why not."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        # ValueError: bad JSON or encoding, an integer of over 4300 digits; RecursionError:
        # arrays or objects nested thousands deep
        raise RequestError(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    bad = find_bad_text(body)
    if bad is not None:  # a lone surrogate would crash the tokenizer (docs/reliability.md)
        path, code = bad
        raise RequestError(
            f"'{path}' is not valid Unicode text (lone surrogate {code})", param=path
        )
    return body


def parse_chat(
    body: Mapping[str, Any], defaults: SamplingDefaults, limits: Limits
) -> ParsedRequest:
    """A ``/v1/chat/completions`` body."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("'messages' must be a non-empty list", param="messages")
    if len(messages) > MAX_MESSAGES:
        raise RequestError(
            f"'messages' has {len(messages)} entries, more than {MAX_MESSAGES}", param="messages"
        )
    parsed = [_message(m, i) for i, m in enumerate(messages)]
    plan = _tool_plan(body)
    tools = list(plan.tools) if plan is not None and plan.parses else None
    for key in ("echo", "suffix"):
        if body.get(key) not in (None, False, ""):
            raise RequestError(
                f"'{key}' goes with /v1/completions, not chat", param=key,
                code="unsupported_parameter",
            )  # fmt: skip
    logprobs = _chat_logprobs(body)
    result = _parsed(body, defaults, limits, messages=parsed, tools=tools, logprobs=logprobs)
    if plan is not None and plan.parses and result.request.sampling.grammar is not None:
        given = next(
            k for k in ("response_format", "grammar", "json_schema") if body.get(k) is not None
        )
        raise RequestError(
            f"'{given}' constrains the reply, so it cannot go with tools unless tool_choice is "
            "'none'",
            param=given,
        )
    n = _n(body)
    return replace(result, tools=plan, choices=_fan_out([result.request], n), n=n)


def _tool_plan(body: Mapping[str, Any]) -> ToolPlan | None:
    """``tools``, ``tool_choice`` and ``parallel_tool_calls``; None when no tools are given."""
    raw = body.get("tools")
    tools = _tools(raw) if raw is not None else ()
    parallel = _bool(body, "parallel_tool_calls", True)
    choice, name = _tool_choice(body.get("tool_choice"))
    if choice in ("required", "function") and not tools:
        raise RequestError(f"tool_choice '{name or choice}' needs 'tools'", param="tool_choice")
    if name is not None and name not in {t["function"]["name"] for t in tools}:
        raise RequestError(
            f"tool_choice names the function '{name}', which is not in 'tools'",
            param="tool_choice",
        )
    if not tools:
        return None
    return ToolPlan(tools, choice, name, parallel)


def _tools(value: Any) -> tuple[dict[str, Any], ...]:
    if not isinstance(value, list):
        raise RequestError("'tools' must be a list of function tools", param="tools")
    if len(value) > MAX_TOOLS:
        raise RequestError(
            f"'tools' has {len(value)} entries, more than {MAX_TOOLS}", param="tools"
        )
    out, seen = [], set()
    for k, tool in enumerate(value):

        def bad(why: str, k: int = k) -> RequestError:
            return RequestError(f"tools[{k}]: {why}", param="tools")

        if not isinstance(tool, dict) or tool.get("type") != "function":
            raise bad('only {"type": "function"} tools are supported')
        fn = tool.get("function")
        if not isinstance(fn, dict):
            raise bad("'function' must be an object")
        name = fn.get("name")
        if not isinstance(name, str) or not TOOL_NAME.fullmatch(name):
            raise bad("function.name must be 1 to 64 of a-z, A-Z, 0-9, '_' and '-'")
        if name in seen:
            raise bad(f"the function name '{name}' is given twice")
        seen.add(name)
        clean: dict[str, Any] = {"name": name}
        for key, kind, what in (
            ("description", str, "a string"),
            ("parameters", dict, "a JSON Schema object"),
            ("strict", bool, "true or false"),
        ):
            given = fn.get(key)
            if given is None:
                continue
            if not isinstance(given, kind):
                raise bad(f"function.{key} must be {what}")
            clean[key] = given
        out.append({"type": "function", "function": clean})
    return tuple(out)


def _tool_choice(value: Any) -> tuple[str, str | None]:
    """(choice, function name of a named choice)."""
    if value is None:
        return "auto", None
    if isinstance(value, str) and value in TOOL_CHOICES:
        return value, None
    fn = value.get("function") if isinstance(value, dict) else None
    if (
        isinstance(value, dict)
        and value.get("type") == "function"
        and isinstance(fn, dict)
        and isinstance(fn.get("name"), str)
    ):
        return "function", fn["name"]
    raise RequestError(
        "tool_choice must be 'auto', 'none', 'required' or "
        '{"type": "function", "function": {"name": ...}}',
        param="tool_choice",
    )


def parse_completion(
    body: Mapping[str, Any], defaults: SamplingDefaults, limits: Limits
) -> ParsedRequest:
    """A ``/v1/completions`` body: ``prompt`` is a string, a list of token ids, or a list of
    prompts (strings or lists of token ids): one choice per prompt, ``n`` of each."""
    if body.get("tools"):
        raise RequestError(
            "tools go with /v1/chat/completions, not /v1/completions",
            param="tools",
            code="unsupported_parameter",
        )
    if body.get("top_logprobs") is not None:
        raise RequestError(
            "/v1/completions takes 'logprobs': k (top_logprobs is the chat field)",
            param="top_logprobs", code="unsupported_parameter",
        )  # fmt: skip
    prompts = _prompts(body.get("prompt"))
    n = _n(body)
    if len(prompts) * n > MAX_CHOICES:
        raise RequestError(
            f"{len(prompts)} prompts x n = {n} is more than {MAX_CHOICES} choices",
            param="prompt" if n == 1 else "n",
        )
    logprobs = _legacy_logprobs(body)
    echo = _bool(body, "echo", False)
    if echo and logprobs is not None:
        raise RequestError(
            "'echo' with 'logprobs' is not supported (the prompt tokens' logprobs would need "
            "logits at every prompt position): send one or the other",
            param="echo", code="unsupported_parameter",
        )  # fmt: skip
    suffix = body.get("suffix")
    if suffix == "":
        suffix = None
    if suffix is not None and not isinstance(suffix, str):
        raise RequestError("'suffix' must be a string", param="suffix")
    first = _parsed(body, defaults, limits, logprobs=logprobs, **prompts[0])
    bases = [first.request]
    bases += [replace(first.request, **{"prompt": None, "tokens": None, **p}) for p in prompts[1:]]
    return replace(first, choices=_fan_out(bases, n), n=n, echo=echo, suffix=suffix)


def _prompts(value: Any) -> list[dict[str, Any]]:
    """``prompt`` as the GenerationRequest fields of each prompt."""
    if isinstance(value, str):
        return [{"prompt": value}]
    if isinstance(value, list) and value and all(_is_int(t) for t in value):
        return [{"tokens": [int(t) for t in value]}]
    if isinstance(value, list) and value:
        out: list[dict[str, Any]] = []
        for p in value:
            if isinstance(p, str):
                out.append({"prompt": p})
            elif isinstance(p, list) and p and all(_is_int(t) for t in p):
                out.append({"tokens": [int(t) for t in p]})
            else:
                break
        else:
            return out
    raise RequestError(
        "'prompt' must be a string, a non-empty list of token ids, or a list of those",
        param="prompt",
    )


def _n(body: Mapping[str, Any]) -> int:
    n = body.get("n")
    if n is None:  # the openai SDK sends "n": null
        return 1
    if not _is_int(n) or not 1 <= n <= MAX_N:
        raise RequestError(f"'n' must be an integer in [1, {MAX_N}]", param="n")
    return int(n)


def _fan_out(bases: Sequence[GenerationRequest], n: int) -> tuple[GenerationRequest, ...]:
    """``n`` choices of each request; with a seed, choice ``j`` samples with seed + j (mod
    2^32), so each differs and the whole reply is reproducible."""
    out = []
    for base in bases:
        seed = base.sampling.seed
        for j in range(n):
            if j and seed >= 0:
                base_j = replace(base, sampling=replace(base.sampling, seed=(seed + j) % 2**32))
            else:
                base_j = base
            out.append(base_j)
    return tuple(out)


def _chat_logprobs(body: Mapping[str, Any]) -> int | None:
    """Chat's ``logprobs`` (true/false) and ``top_logprobs`` (0..20) as the engine's field."""
    wanted = _bool(body, "logprobs", False)
    top = body.get("top_logprobs")
    if top is None:
        return 0 if wanted else None
    if not _is_int(top) or not 0 <= top <= MAX_LOGPROBS:
        raise RequestError(
            f"'top_logprobs' must be an integer in [0, {MAX_LOGPROBS}]", param="top_logprobs"
        )
    if not wanted:
        raise RequestError("'top_logprobs' needs 'logprobs': true", param="top_logprobs")
    return int(top)


def _legacy_logprobs(body: Mapping[str, Any]) -> int | None:
    """/v1/completions' ``logprobs``: k alternatives per token (0: the chosen token's only)."""
    value = body.get("logprobs")
    if value is None or value is False:
        return None
    if not _is_int(value) or not 0 <= value <= MAX_LOGPROBS:
        raise RequestError(
            f"'logprobs' must be an integer in [0, {MAX_LOGPROBS}] on /v1/completions",
            param="logprobs",
        )
    return int(value)


def _parsed(
    body: Mapping[str, Any], defaults: SamplingDefaults, limits: Limits, **prompt: Any
) -> ParsedRequest:
    _refuse_unsupported(body)
    # the openai SDK sends ``"max_completion_tokens": null`` next to a set ``max_tokens``
    max_tokens = body.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_tokens")
    if max_tokens is None:
        max_tokens = min(defaults.max_tokens, limits.default_max_tokens, limits.max_tokens)
    elif not _is_int(max_tokens) or max_tokens < 1:
        raise RequestError("'max_tokens' must be a positive integer", param="max_tokens")
    elif max_tokens > limits.max_tokens:
        raise RequestError(
            f"'max_tokens' is {max_tokens}, more than this worker allows ({limits.max_tokens})",
            param="max_tokens",
        )
    stream = _bool(body, "stream", False)
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise RequestError("'stream_options' must be an object", param="stream_options")
    model = body.get("model")
    request = GenerationRequest(
        max_tokens=int(max_tokens),
        sampling=sampling_from_body(body, defaults),
        stop=_stops(body.get("stop")),
        ignore_eos=_bool(body, "ignore_eos", False),
        cache_prompt=_bool(body, "cache_prompt", True),
        **prompt,
    )
    return ParsedRequest(
        request=request,
        stream=stream,
        include_usage=bool(options.get("include_usage", False)),
        model=model if isinstance(model, str) else None,
    )


def sampling_from_body(body: Mapping[str, Any], defaults: SamplingDefaults) -> SamplingParams:
    """Sampling settings named in ``body``, the worker's defaults for the rest."""
    seed = body.get("seed")
    if seed is None:
        seed = defaults.seed
    elif not _is_int(seed) or not -1 <= seed < 2**32:
        raise RequestError("'seed' must be an integer in [-1, 2^32)", param="seed")
    try:
        return SamplingParams(
            temperature=_num(body, "temperature", defaults.temperature),
            top_k=int(_num(body, "top_k", defaults.top_k, integer=True)),
            top_p=_num(body, "top_p", defaults.top_p),
            min_p=_num(body, "min_p", defaults.min_p),
            repeat_penalty=_num(body, "repeat_penalty", defaults.repeat_penalty),
            presence_penalty=_num(body, "presence_penalty", 0.0),
            frequency_penalty=_num(body, "frequency_penalty", 0.0),
            repeat_last_n=int(_num(body, "repeat_last_n", defaults.repeat_last_n, integer=True)),
            seed=int(seed),
            logit_bias=_logit_bias(body.get("logit_bias")),
            grammar=_grammar(body),
        )
    except RequestError:
        raise
    except UserInputError as exc:
        text = str(exc)
        param = next((v for k, v in SAMPLING_PARAMS.items() if text.startswith(k)), None)
        raise RequestError(text, param=param) from None


def _refuse_unsupported(body: Mapping[str, Any]) -> None:
    """A 400 naming the field for what this worker cannot do, so nothing is silently ignored
    (a null is "not given": the openai SDK sends ``"n": null``)."""

    def refuse(key: str, message: str) -> None:
        raise RequestError(message, param=key, code="unsupported_parameter")

    for legacy in ("functions", "function_call"):
        if body.get(legacy) is not None:
            refuse(
                legacy, f"'{legacy}' is OpenAI's deprecated form: send 'tools' (and 'tool_choice')"
            )
    if body.get("best_of") not in (None, 1):
        refuse("best_of", "'best_of' other than 1 is not supported (send n with seeds)")


def _grammar(body: Mapping[str, Any]) -> str | None:
    """The GBNF grammar the reply must match: OpenAI's ``response_format`` (``json_object``,
    ``json_schema``; ``strict`` or not, the schema is enforced), or llama-server's
    ``grammar`` (GBNF) / ``json_schema`` fields; None for free text."""
    from llcuda_tui.core.engine import json_object_grammar, json_schema_grammar

    given = [k for k in ("response_format", "grammar", "json_schema") if body.get(k) is not None]
    if len(given) > 1:
        raise RequestError(f"give one of {', '.join(given)}", param=given[1])
    fmt = body.get("response_format")
    try:
        if fmt is not None:
            kind = fmt.get("type") if isinstance(fmt, dict) else None
            if kind == "text":
                return None
            if kind == "json_object":
                return json_object_grammar()
            if kind == "json_schema":
                spec = fmt.get("json_schema")
                schema = spec.get("schema") if isinstance(spec, dict) else None
                if schema is None and isinstance(spec, dict):
                    schema = {}  # OpenAI: no schema is any JSON
                if not isinstance(schema, dict):
                    raise RequestError(
                        "response_format.json_schema.schema must be an object",
                        param="response_format",
                    )
                return json_schema_grammar(schema)
            raise RequestError(
                "response_format.type must be 'text', 'json_object' or 'json_schema' "
                f"(not {kind!r})",
                param="response_format",
            )
        schema = body.get("json_schema")
        if schema is not None:
            if not isinstance(schema, dict):
                raise RequestError("'json_schema' must be an object", param="json_schema")
            return json_schema_grammar(schema)
    except RequestError:
        raise
    except UserInputError as exc:
        raise RequestError(str(exc), param=given[0]) from None
    grammar = body.get("grammar")
    if grammar is None:
        return None
    if not isinstance(grammar, str) or not grammar.strip():
        raise RequestError("'grammar' must be a non-empty GBNF string", param="grammar")
    if len(grammar) > MAX_GRAMMAR_CHARS:
        raise RequestError(f"'grammar' is over {MAX_GRAMMAR_CHARS} characters", param="grammar")
    return grammar


def _message(m: Any, i: int) -> dict[str, Any]:
    if not isinstance(m, dict):
        raise RequestError(f"messages[{i}] must be an object", param="messages")
    role, content = m.get("role"), m.get("content")
    if role not in ("system", "user", "assistant", "tool", "developer"):
        raise RequestError(f"messages[{i}] has a bad role: {role!r}", param="messages")
    if role == "developer":
        role = "system"
    if content is None:
        content = ""
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                message = f"messages[{i}]: only text content is supported"
                raise RequestError(message, param="messages")
            parts.append(str(part.get("text", "")))
        content = "".join(parts)
    if not isinstance(content, str):
        raise RequestError(f"messages[{i}].content must be a string", param="messages")
    out: dict[str, Any] = {"role": role, "content": content}
    calls = m.get("tool_calls")
    if role == "assistant" and calls:
        out["tool_calls"] = _history_calls(calls, i)
    if role == "tool":
        for key in ("tool_call_id", "name"):
            value = m.get(key)
            if value is None:
                continue
            if not isinstance(value, str):
                raise RequestError(f"messages[{i}].{key} must be a string", param="messages")
            out[key] = value
    return out


def _history_calls(calls: Any, i: int) -> list[dict[str, Any]]:
    """An assistant turn's ``tool_calls`` in OpenAI's shape (``arguments`` a JSON string)."""
    if not isinstance(calls, list):
        raise RequestError(f"messages[{i}].tool_calls must be a list", param="messages")
    out = []
    for j, call in enumerate(calls):
        where = f"messages[{i}].tool_calls[{j}]"
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise RequestError(f"{where} needs function.name", param="messages")
        arguments = fn.get("arguments")
        if arguments is None:
            arguments = "{}"
        elif isinstance(arguments, dict):  # not OpenAI's shape, but unambiguous
            try:
                arguments = json.dumps(arguments, ensure_ascii=False)
            except (ValueError, RecursionError):
                raise RequestError(f"{where}: bad arguments", param="messages") from None
        if not isinstance(arguments, str):
            raise RequestError(f"{where}: function.arguments must be a string", param="messages")
        call_id = call.get("id")
        if call_id is None:
            call_id = f"call_{i}_{j}"
        if not isinstance(call_id, str):
            raise RequestError(f"{where}: 'id' must be a string", param="messages")
        function = {"name": fn["name"], "arguments": arguments}
        out.append({"id": call_id, "type": "function", "function": function})
    return out


def _stops(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if (
        not isinstance(stops, list)
        or len(stops) > MAX_STOP_STRINGS
        or not all(isinstance(s, str) and 0 < len(s) <= MAX_STOP_CHARS for s in stops)
    ):
        raise RequestError(
            f"'stop' must be a non-empty string or a list of at most {MAX_STOP_STRINGS} of them",
            param="stop",
        )
    return tuple(stops)


def _logit_bias(value: Any) -> dict[int, float]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RequestError("'logit_bias' must map token ids to numbers", param="logit_bias")
    out: dict[int, float] = {}
    for key, bias in value.items():
        try:
            token = int(key)
        except (TypeError, ValueError):
            message = f"logit_bias key {key!r} is not a token id"
            raise RequestError(message, param="logit_bias") from None
        if not _is_num(bias):
            raise RequestError(f"logit_bias for {key} must be a number", param="logit_bias")
        out[token] = float(bias)
    return out


def _num(body: Mapping[str, Any], key: str, default: float, integer: bool = False) -> float:
    value = body.get(key)
    if value is None:
        return default
    if not (_is_int(value) if integer else _is_num(value)):
        kind = "an integer" if integer else "a number"
        raise RequestError(f"'{key}' must be {kind}", param=key)
    return value


def _bool(body: Mapping[str, Any], key: str, default: bool) -> bool:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise RequestError(f"'{key}' must be true or false", param=key)
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_num(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        return False


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
