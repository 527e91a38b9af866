"""Parsing OpenAI-shaped request bodies into generation requests (server side)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from llcuda_tui.core.config import SamplingDefaults
from llcuda_tui.core.engine import (
    MAX_LOGPROBS,
    GenerationRequest,
    SamplingParams,
)
from llcuda_tui.core.errors import UserInputError
from llcuda_tui.core.unicode import find_bad_text
from llcuda_tui.core.worker.protocol._common import (
    MAX_CHOICES,
    MAX_GRAMMAR_CHARS,
    MAX_MESSAGES,
    MAX_N,
    MAX_STOP_CHARS,
    MAX_STOP_STRINGS,
    MAX_TOOLS,
    SAMPLING_PARAMS,
    TOOL_CHOICES,
    TOOL_NAME,
    Limits,
    ParsedRequest,
    RequestError,
    ToolPlan,
)

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
        speculative=_speculative(body),
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


def _speculative(body: Mapping[str, Any]) -> bool:
    """Whether this request may decode speculatively (when the worker was started with
    ``--spec``): ``"speculative": false`` turns it off, and so does llama-server's
    ``"speculative.n_max": 0``; a positive ``n_max`` is accepted, the worker's --draft-max
    applies."""
    on = _bool(body, "speculative", True)
    n_max = body.get("speculative.n_max")
    if n_max is not None and (not _is_int(n_max) or n_max < 0):
        raise RequestError(
            "'speculative.n_max' must be a non-negative integer", param="speculative.n_max"
        )
    return on and n_max != 0


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
