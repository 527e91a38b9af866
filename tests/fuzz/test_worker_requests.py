"""Fuzz the worker's request parsing (:mod:`llcuda_tui.core.worker.protocol`) and its HTTP
front (:mod:`llcuda_tui.core.worker.server`).

Property: a body parses to a valid :class:`ParsedRequest` or raises :class:`RequestError`
(which the server answers with its 4xx status); nothing else. Against one real server on
127.0.0.1: every answer to a generated body or to raw bytes is a 2xx or 4xx with a JSON body
(or an event stream for a valid streamed request), never a 5xx, and ``/health`` stays ok.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from llcuda_tui.core.config import SamplingDefaults
from llcuda_tui.core.errors import UserInputError
from llcuda_tui.core.worker import WorkerServer
from llcuda_tui.core.worker import protocol as P
from tests.core.worker.conftest import auth, tiny_config

LIMITS = P.Limits(max_tokens=64, default_max_tokens=16)
DEFAULTS = SamplingDefaults()
HUGE_INTS = [2**31, 2**63, 2**64, 10**400, -(10**400)]


def texts(max_size: int, min_size: int = 0) -> st.SearchStrategy[str]:
    """Any text, lone surrogates included (valid JSON as ``"\\ud800"``, not valid UTF-8):
    Hypothesis leaves category Cs out unless told."""
    return st.text(st.characters(exclude_categories=()), min_size=min_size, max_size=max_size)


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from(HUGE_INTS),
    st.floats(allow_nan=True, allow_infinity=True),
    texts(20),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(texts(8), inner, max_size=4)
    ),
    max_leaves=12,
)
roles = st.one_of(
    st.sampled_from(["system", "user", "assistant", "tool", "developer"]), json_values
)
contents = st.one_of(
    texts(30),
    st.lists(
        st.one_of(
            st.fixed_dictionaries({"type": st.just("text"), "text": json_values}),
            json_values,
        ),
        max_size=3,
    ),
    json_values,
)
tool_names = st.one_of(st.sampled_from(["get_weather", "add", "x"]), texts(6), json_values)
history_calls = st.one_of(
    st.lists(
        st.one_of(
            st.fixed_dictionaries(
                {
                    "id": st.one_of(texts(8), json_values),
                    "type": st.just("function"),
                    "function": st.fixed_dictionaries(
                        {"name": tool_names, "arguments": st.one_of(texts(20), json_values)}
                    ),
                }
            ),
            json_values,
        ),
        max_size=3,
    ),
    json_values,
)
messages = st.one_of(
    st.lists(
        st.one_of(
            st.fixed_dictionaries({"role": roles, "content": contents}),
            st.fixed_dictionaries(
                {"role": st.just("assistant"), "content": st.none(), "tool_calls": history_calls}
            ),
            st.fixed_dictionaries(
                {"role": st.just("tool"), "content": contents, "tool_call_id": json_values}
            ),
            json_values,
        ),
        max_size=4,
    ),
    json_values,
)
schemas = st.one_of(
    st.just({"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}),
    st.just({"type": "object", "properties": {"s": {"type": "string", "maxLength": 10**9}}}),
    st.just({"type": "object", "properties": {"s": {"$ref": "#/nope"}}}),
    st.dictionaries(
        st.sampled_from(["type", "properties", "required", "enum", "items", "anyOf", "$ref"]),
        json_values,
        max_size=3,
    ),
    json_values,
)
tools = st.one_of(
    st.lists(
        st.one_of(
            st.fixed_dictionaries(
                {
                    "type": st.just("function"),
                    "function": st.fixed_dictionaries(
                        {"name": tool_names},
                        optional={
                            "description": st.one_of(texts(20), json_values),
                            "parameters": schemas,
                            "strict": json_values,
                        },
                    ),
                }
            ),
            json_values,
        ),
        max_size=3,
    ),
    json_values,
)
tool_choices = st.one_of(
    st.sampled_from(["auto", "none", "required"]),
    st.fixed_dictionaries(
        {"type": st.just("function"), "function": st.fixed_dictionaries({"name": tool_names})}
    ),
    json_values,
)
plausible: dict[str, st.SearchStrategy[Any]] = {
    "messages": messages,
    "prompt": st.one_of(
        texts(20),
        st.lists(st.integers(-5, 600), max_size=5),
        st.lists(texts(5), max_size=2),
    ),
    "max_tokens": st.one_of(st.integers(-2, 80), st.sampled_from(HUGE_INTS)),
    "max_completion_tokens": st.integers(-2, 80),
    "temperature": st.floats(allow_nan=True, allow_infinity=True),
    "top_k": st.one_of(st.integers(), st.sampled_from(HUGE_INTS)),
    "top_p": st.floats(allow_nan=True, allow_infinity=True),
    "min_p": st.floats(-1, 2),
    "repeat_penalty": st.one_of(st.floats(), st.sampled_from(HUGE_INTS)),
    "repeat_last_n": st.one_of(st.integers(), st.sampled_from(HUGE_INTS)),
    "seed": st.one_of(st.integers(), st.sampled_from(HUGE_INTS)),
    "logit_bias": st.dictionaries(
        st.one_of(st.integers(-5, 600).map(str), texts(6), st.just("9" * 5000)),
        st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(HUGE_INTS)),
        max_size=3,
    ),
    "stop": st.one_of(texts(5), st.lists(texts(5), max_size=20)),
    "n": st.one_of(st.just(1), st.integers(-1, 3), st.floats()),
    "stream": st.booleans(),
    "stream_options": st.fixed_dictionaries({"include_usage": json_values}),
    "logprobs": st.one_of(st.booleans(), st.integers(-1, 22), json_values),
    "top_logprobs": st.one_of(st.integers(-1, 22), json_values),
    "echo": st.one_of(st.booleans(), json_values),
    "suffix": st.one_of(texts(5), json_values),
    "best_of": st.one_of(st.integers(-1, 3), json_values),
    "tools": tools,
    "tool_choice": tool_choices,
    "parallel_tool_calls": st.one_of(st.booleans(), json_values),
    "functions": json_values,
    "frequency_penalty": st.floats(allow_nan=True),
    "presence_penalty": st.floats(allow_nan=True),
    "ignore_eos": st.booleans(),
    "model": json_values,
}


sane: dict[str, st.SearchStrategy[Any]] = {  # values a valid request may hold
    "max_tokens": st.integers(1, LIMITS.max_tokens),
    "temperature": st.floats(0, 2),
    "top_k": st.integers(0, 100),
    "top_p": st.floats(0, 1),
    "min_p": st.floats(0, 1),
    "repeat_penalty": st.floats(0.5, 2),
    "seed": st.integers(-1, 2**32 - 1),
    "stop": st.lists(texts(5, min_size=1), max_size=3),
    "logit_bias": st.dictionaries(st.integers(0, 500).map(str), st.floats(-100, 100), max_size=2),
    "n": st.integers(1, 3),
    "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
}
cores = st.one_of(
    st.just({}),
    st.fixed_dictionaries(
        {
            "messages": st.lists(
                st.fixed_dictionaries(
                    {"role": st.sampled_from(["system", "user", "assistant"]), "content": texts(40)}
                ),
                min_size=1,
                max_size=3,
            )
        }
    ),
    st.fixed_dictionaries(
        {"prompt": st.one_of(texts(20), st.lists(st.integers(3, 500), min_size=1))}
    ),
    st.fixed_dictionaries(  # prompt arrays
        {
            "prompt": st.lists(
                st.one_of(texts(10), st.lists(st.integers(3, 500), min_size=1)),
                min_size=1,
                max_size=4,
            )
        }
    ),
)


@st.composite
def bodies(draw: st.DrawFn) -> dict[str, Any]:
    """A request body: often a valid core (messages or prompt), then known keys with sane,
    plausible or arbitrary values, plus stray keys."""
    body: dict[str, Any] = dict(draw(cores))
    keys = draw(st.lists(st.sampled_from(sorted(plausible)), unique=True, max_size=8))
    for key in keys:
        choices = [plausible[key], json_values]
        if key in sane:
            choices.insert(0, sane[key])
        body[key] = draw(st.one_of(*choices))
    body.update(draw(st.dictionaries(texts(8), json_values, max_size=2)))
    return body


def check_parse(body: Any, chat: bool) -> P.ParsedRequest | None:
    """Parse ``body``; the request (checked), or None when refused with a 4xx."""
    parse = P.parse_chat if chat else P.parse_completion
    try:
        parsed = parse(body, DEFAULTS, LIMITS)
    except P.RequestError as exc:
        assert 400 <= exc.status < 500
        assert str(exc)
        return None
    req = parsed.request
    assert 1 <= req.max_tokens <= LIMITS.max_tokens
    assert 1 <= parsed.n <= P.MAX_N and len(parsed.requests) % parsed.n == 0
    assert len(parsed.requests) <= P.MAX_CHOICES and parsed.requests[0] is req
    assert req.logprobs is None or 0 <= req.logprobs <= 20
    assert not (parsed.echo and req.logprobs is not None)
    assert all(isinstance(s, str) and s for s in req.stop)
    assert isinstance(parsed.stream, bool) and isinstance(parsed.include_usage, bool)
    if chat:
        assert req.messages
        for m in req.messages:
            assert m["role"] in ("system", "user", "assistant", "tool")
            assert isinstance(m["content"], str)
            for call in m.get("tool_calls", ()):
                assert isinstance(call["id"], str) and isinstance(call["function"]["name"], str)
                assert isinstance(call["function"]["arguments"], str)
        plan = parsed.tools
        if plan is not None:
            assert plan.tools and len(plan.names) == len(plan.tools)
            assert (req.tools is not None) == plan.parses
    else:
        for r in parsed.requests:
            assert isinstance(r.prompt, str) or all(isinstance(t, int) for t in r.tokens or ())
            assert r.tools is None
    if req.logprobs is not None:  # a remote engine streams text: it refuses logprobs too
        with pytest.raises(UserInputError, match="logprobs"):
            P.request_payload(req, parsed.model)
        return parsed
    if req.tools:  # a remote engine streams text: it refuses tools (one clear line)
        with pytest.raises(UserInputError, match="tools"):
            P.request_payload(req, parsed.model)
        return parsed
    json.dumps(P.request_payload(req, parsed.model)[1], allow_nan=False)  # it goes back out
    return parsed


def check_body(raw: bytes) -> dict[str, Any] | None:
    try:
        body = P.parse_body(raw)
    except P.RequestError as exc:
        assert 400 <= exc.status < 500 and "\n" not in str(exc)
        return None
    assert isinstance(body, dict)
    return body


# --- the parsing functions ----------------------------------------------------------------

DEEP = b"[" * 100_000 + b"]" * 100_000


@given(body=bodies(), chat=st.booleans())
@example(body={"messages": [{"role": "user", "content": "hi"}], "temperature": 10**400}, chat=True)
@example(body={"prompt": "hi", "top_p": -(10**400)}, chat=False)
@example(body={"prompt": "hi", "repeat_penalty": 2**1024}, chat=False)
@example(body={"prompt": "hi", "logit_bias": {"1": 10**400}}, chat=False)
@example(body={"prompt": "hi", "logit_bias": {"9" * 5000: 1}}, chat=False)
@example(body={"prompt": "hi", "logit_bias": {"1_0": 1}}, chat=False)
def test_parse_request(body: dict[str, Any], chat: bool) -> None:
    check_parse(body, chat)


@given(body=json_values, chat=st.booleans())
def test_parse_any_json_value(body: Any, chat: bool) -> None:
    if isinstance(body, dict):
        check_parse(body, chat)
    else:
        check_body(json.dumps(body).encode())


@given(raw=st.binary(max_size=200))
@example(raw=DEEP)
@example(raw=b"1" * 5000)
@example(raw=b'{"a": ' + b"9" * 5000 + b"}")
@example(raw=b'{"temperature": NaN, "stream": Infinity}')
@example(raw='{"prompt": "\ud800"}'.encode("utf-8", "surrogatepass"))
@example(raw=b"\xef\xbb\xbf{}")
@example(raw=b"\xff\xfe{\x00}\x00")
def test_parse_raw_bytes(raw: bytes) -> None:
    check_body(raw)


@given(body=bodies().map(lambda b: json.dumps(b).encode()))
def test_parse_serialised_bodies(body: bytes) -> None:
    parsed = check_body(body)
    if parsed is not None:
        check_parse(parsed, "messages" in parsed)


# --- one real server ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def worker(tiny_gguf: Path) -> Iterator[WorkerServer]:
    """The tiny model; at most 4 tokens a request, so valid bodies answer fast."""
    with WorkerServer(tiny_config(tiny_gguf, max_tokens=4)) as w:
        yield w


@pytest.fixture(scope="module")
def client(worker: WorkerServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=worker.url, headers=auth(), timeout=30) as c:
        yield c


SERVER_EXAMPLES = max(60, settings.default.max_examples // 20)
"""Requests to the real server: 60 in CI (each valid one generates up to 4 tokens)."""
ENDPOINTS = ["/v1/chat/completions", "/v1/completions", "/llcuda/v1/tokenize"]


def post(client: httpx.Client, path: str, content: bytes) -> None:
    headers = {"content-type": "application/json"}
    resp = client.post(path, content=content, headers=headers)
    assert resp.status_code < 500, (resp.status_code, resp.text[:500], content[:300])
    if resp.headers.get("content-type", "").startswith("text/event-stream"):
        assert resp.status_code == 200 and resp.text.rstrip().endswith("data: [DONE]")
        assert '"type":"server_error"' not in resp.text, resp.text[-500:]  # no error mid-stream
    else:
        payload = resp.json()
        assert isinstance(payload, dict)
        assert (resp.status_code >= 400) == ("error" in payload), payload


@settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    max_examples=SERVER_EXAMPLES,
    deadline=None,
)
@given(body=bodies(), path=st.sampled_from(ENDPOINTS))
@example(
    body={"messages": [{"role": "user", "content": "hi"}], "temperature": 10**400},
    path=ENDPOINTS[0],
)
@example(body={"prompt": [10**30]}, path=ENDPOINTS[1])
@example(body={"prompt": [-7, 2**31]}, path=ENDPOINTS[1])
@example(body={"prompt": "hi", "logit_bias": {"-3": 1, "99999999": 2}}, path=ENDPOINTS[1])
@example(body={"prompt": "hi", "top_k": 2**63, "repeat_last_n": 2**63}, path=ENDPOINTS[1])
@example(body={"prompt": "hi", "seed": -1, "stream": True}, path=ENDPOINTS[1])
@example(body={"content": "x" * 1000, "add_special": None}, path=ENDPOINTS[2])
@example(
    body={
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "f",
                    "parameters": {"type": "object", "properties": {"s": {"maxLength": 10**9}}},
                },
            }
        ],
        "tool_choice": "required",
    },
    path=ENDPOINTS[0],
)
@example(
    body={
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "tool_choice": {"type": "function", "function": {"name": "f"}},
        "stream": True,
    },
    path=ENDPOINTS[0],
)
def test_server_answers_generated_bodies(
    body: dict[str, Any], path: str, client: httpx.Client
) -> None:
    post(client, path, json.dumps(body).encode())


@settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    max_examples=SERVER_EXAMPLES * 2 // 3,
    deadline=None,
)
@given(raw=st.binary(max_size=300), path=st.sampled_from(ENDPOINTS))
@example(raw=DEEP, path=ENDPOINTS[0])
@example(raw=b"9" * 5000, path=ENDPOINTS[1])
@example(raw=b'{"messages": [{"role": "user", "content": "x"}], "n": NaN}', path=ENDPOINTS[0])
def test_server_answers_raw_bytes(raw: bytes, path: str, client: httpx.Client) -> None:
    post(client, path, raw)


def test_server_is_healthy_after_the_fuzzing(client: httpx.Client) -> None:
    """Runs after the two tests above (file order): the worker still serves."""
    health = client.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "ok", health.text
    resp = client.post("/v1/completions", json={"prompt": "hello", "max_tokens": 2})
    assert resp.status_code == 200 and resp.json()["choices"][0]["finish_reason"] == "length"
