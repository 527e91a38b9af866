"""Tool calls (issue #17 item 2): the parsers on the text the common templates' models write,
the streaming parser against the whole-reply one, and real workers through the real openai
client: a named call that always parses, a streamed call the SDK reassembles, a tool result
round trip, ``tool_choice`` ``none`` / ``required``, ``parallel_tool_calls``, the 400s.

With a 135M model ``auto`` may or may not call a tool, so the model-level assertions are on
``required`` and named calls, which the grammar makes valid JSON for the schema every time.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from llcuda_tui.core.engine import EngineConfig
from llcuda_tui.core.worker import WorkerConfig, WorkerServer
from llcuda_tui.core.worker.toolcalls import ToolCallStream, parse_reply
from tests.core.worker.conftest import API_KEY, auth, tiny_config

pytestmark = pytest.mark.timeout(900)  # a loaded 2-core box took 50 s for one 250-token prefill

NAMES = ("get_weather", "add")
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "the city"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
        },
    },
}
ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two integers",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    },
}
TOOLS = [WEATHER, ADD]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}


def _calls(reply: Any) -> list[tuple[str, dict[str, Any]]]:
    return [(c.name, json.loads(c.arguments)) for c in reply.calls]


# --- the parsers, on replies as the templates' models write them ------------------------------

PARIS = {"city": "Paris", "unit": "celsius"}
REPLIES: dict[str, tuple[str, str | None, list[tuple[str, dict[str, Any]]]]] = {
    # Qwen2.5 / Hermes 2 Pro: one block per call, as their templates ask
    "qwen": (
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": '
        '"celsius"}}\n</tool_call>',
        None,
        [("get_weather", PARIS)],
    ),
    "qwen-parallel": (
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": '
        '"celsius"}}\n</tool_call>\n<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}'
        "\n</tool_call>",
        None,
        [("get_weather", PARIS), ("add", {"a": 2, "b": 3})],
    ),
    "hermes-with-text": (
        "Let me look that up.\n<tool_call>\n"
        '{"arguments": {"city": "Paris", "unit": "celsius"}, "name": "get_weather"}\n'
        "</tool_call>",
        "Let me look that up.",
        [("get_weather", PARIS)],
    ),
    "hermes-unclosed": (  # stopped at the end-of-turn token before the closing tag
        '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 1}}\n',
        None,
        [("add", {"a": 1, "b": 1})],
    ),
    # Llama 3.1 / 3.2: the JSON its template asks for; <|python_tag|> is a control token the
    # reply's text does not hold, but a GGUF may mark it as text
    "llama3": (
        '{"name": "get_weather", "parameters": {"city": "Paris", "unit": "celsius"}}',
        None,
        [("get_weather", PARIS)],
    ),
    "llama3-python-tag": (
        '<|python_tag|>{"name": "add", "parameters": {"a": 4, "b": 5}}; '
        '{"name": "get_weather", "parameters": {"city": "Paris", "unit": "celsius"}}',
        None,
        [("add", {"a": 4, "b": 5}), ("get_weather", PARIS)],
    ),
    "llama3-function-tag": (
        '<function=get_weather>{"city": "Paris", "unit": "celsius"}</function>',
        None,
        [("get_weather", PARIS)],
    ),
    # Mistral v3 (Mistral 7B v0.3, Nemo): a JSON array after [TOOL_CALLS]
    "mistral": (
        '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris", "unit": '
        '"celsius"}, "id": "a1B2c3D4e"}]',
        None,
        [("get_weather", PARIS)],
    ),
    # ... as the reply's text has it when [TOOL_CALLS] is a control token
    "mistral-no-marker": (
        '[{"name": "add", "arguments": {"a": 7, "b": 8}}]',
        None,
        [("add", {"a": 7, "b": 8})],
    ),
    # Mistral Small 3.2 / Magistral: name[ARGS]{...}
    "mistral-args": (
        '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris", "unit": "celsius"}[TOOL_CALLS]add'
        '[ARGS]{"a": 1, "b": 2}',
        None,
        [("get_weather", PARIS), ("add", {"a": 1, "b": 2})],
    ),
    # the generic fallback: JSON alone, fenced or not, OpenAI's shape, arguments as a string
    "fenced": (
        '```json\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n```',
        None,
        [("add", {"a": 1, "b": 2})],
    ),
    "openai-shape": (
        '{"tool_calls": [{"type": "function", "function": {"name": "add", '
        '"arguments": "{\\"a\\": 3, \\"b\\": 4}"}}]}',
        None,
        [("add", {"a": 3, "b": 4})],
    ),
    # not calls: text stays text, whole
    "prose": ("The weather in Paris is mild.", "The weather in Paris is mild.", []),
    "json-answer": ('{"answer": 42}', '{"answer": 42}', []),
    "unknown-function": (
        '<tool_call>\n{"name": "launch", "arguments": {}}\n</tool_call>',
        '<tool_call>\n{"name": "launch", "arguments": {}}\n</tool_call>',
        [],
    ),
    "broken-json": (
        '<tool_call>\n{"name": "add", "arguments": {"a": 1,\n</tool_call>',
        '<tool_call>\n{"name": "add", "arguments": {"a": 1,\n</tool_call>',
        [],
    ),
    "arguments-not-an-object": (
        '{"name": "add", "arguments": [1, 2]}',
        '{"name": "add", "arguments": [1, 2]}',
        [],
    ),
    "tag-in-prose": (
        "Wrap calls in <tool_call> tags.",
        "Wrap calls in <tool_call> tags.",
        [],
    ),
}


@pytest.mark.parametrize("case", sorted(REPLIES))
def test_the_parsers_read_each_format(case: str) -> None:
    text, content, calls = REPLIES[case]
    reply = parse_reply(text, NAMES)
    assert reply.content == content
    assert _calls(reply) == calls
    for call in reply.calls:
        assert call.id.startswith("call_")
        jsonschema.validate(json.loads(call.arguments), SCHEMAS[call.name])


def test_without_parallel_calls_only_the_first_counts() -> None:
    reply = parse_reply(REPLIES["qwen-parallel"][0], NAMES, parallel=False)
    assert _calls(reply) == [("get_weather", PARIS)]
    assert reply.content is None


def _stream(text: str, cuts: list[int], parallel: bool = True) -> tuple[str, list[dict]]:
    """The text's deltas fed in pieces cut at ``cuts``: (content, calls as the SDK adds them
    up: by index, name and id from the first delta, arguments concatenated)."""
    stream = ToolCallStream(NAMES, parallel)
    bounds = sorted({0, len(text), *(c % (len(text) + 1) for c in cuts)})
    deltas = []
    for a, b in itertools.pairwise(bounds):
        deltas += stream.feed(text[a:b])
    deltas += stream.finish()
    content, calls = "", {}
    for d in deltas:
        content += d.get("content", "")
        for tc in d.get("tool_calls", []):
            call = calls.setdefault(tc["index"], {"arguments": ""})
            call.update({k: tc[k] for k in ("id", "type") if k in tc})
            call.setdefault("name", tc["function"].get("name"))
            call["arguments"] += tc["function"].get("arguments", "")
    return content, [calls[i] for i in sorted(calls)]


@given(case=st.sampled_from(sorted(REPLIES)), cuts=st.lists(st.integers(0, 400), max_size=12))
def test_a_streamed_reply_has_the_whole_replys_calls(case: str, cuts: list[int]) -> None:
    text, content, calls = REPLIES[case]
    streamed, streamed_calls = _stream(text, cuts)
    assert streamed.strip() == (content or "").strip()
    assert [(c["name"], json.loads(c["arguments"])) for c in streamed_calls] == calls
    assert all(c["type"] == "function" and c["id"].startswith("call_") for c in streamed_calls)


def test_plain_text_streams_before_the_reply_ends() -> None:
    stream = ToolCallStream(NAMES)
    assert stream.feed("The answer") == [{"content": "The answer"}]
    assert stream.feed(" is <tool") == [{"content": " is "}]  # '<tool' may open a call
    assert stream.feed("s> here") == [{"content": "<tools> here"}]
    assert stream.finish() == []
    stream = ToolCallStream(NAMES)
    assert stream.feed("  ") == []  # a reply opening with JSON may be a call: held
    assert stream.feed('{"name": "add"') == []
    assert stream.feed(', "arguments": {"a": 1, "b": 2}}') == []
    last = stream.finish()
    assert [d["tool_calls"][0]["index"] for d in last] == [0, 0]
    assert last[1]["tool_calls"][0]["function"]["arguments"] == '{"a": 1, "b": 2}'


# --- the starter model through the real openai client ---------------------------------------


@pytest.fixture(scope="module")
def smollm(smollm_path: Path, cpu_threads: int) -> Iterator[WorkerServer]:
    """The starter chat model in one slot, whose prefix cache keeps the ~230 tokens of the
    tools' system block between requests (the cache is off with several slots): each request
    then prefills its last turn only (a loaded 2-core box took 40 s for the whole prompt)."""
    cfg = WorkerConfig(
        engine=EngineConfig(smollm_path, n_ctx=1024, n_threads=cpu_threads),
        model_name="smollm",
        parallel=1,
    )
    with WorkerServer(cfg) as worker:
        yield worker


def _client(worker: WorkerServer, key: str = "none") -> Any:
    import openai

    return openai.OpenAI(base_url=f"{worker.url}/v1", api_key=key, max_retries=0)


PROMPTS = ["What is the weather like in Paris?", "hello"]


@pytest.mark.parametrize("prompt", PROMPTS)
def test_a_named_tool_call_always_parses(smollm: WorkerServer, prompt: str) -> None:
    reply = _client(smollm).chat.completions.create(
        model="smollm",
        messages=[{"role": "user", "content": prompt}],
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=200,
        temperature=0,
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls", choice.message
    assert choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), SCHEMAS["get_weather"])


def test_a_streamed_tool_call_is_reassembled_by_the_sdk(smollm: WorkerServer) -> None:
    with _client(smollm).chat.completions.stream(
        model="smollm",
        messages=[{"role": "user", "content": "What is 2 plus 3?"}],
        tools=TOOLS,
        tool_choice="required",
        parallel_tool_calls=False,
        max_tokens=200,
        temperature=0,
    ) as stream:
        kinds = {event.type for event in stream}
        final = stream.get_final_completion()
    assert "tool_calls.function.arguments.done" in kinds, kinds
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert call.function.name in NAMES and call.id.startswith("call_")
    jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])
    assert call.function.parsed_arguments is None  # no strict pydantic tool: left to us


def test_a_tool_result_round_trip(smollm: WorkerServer) -> None:
    client = _client(smollm)
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.chat.completions.create(
        model="smollm",
        messages=messages,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=200,
        temperature=0,
    )
    message = first.choices[0].message
    [call] = message.tool_calls
    messages.append(message)  # the SDK's own message object, as its docs do it
    result = "Sunny, 22 degrees celsius, light wind from the west"
    messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
    second = client.chat.completions.create(
        model="smollm", messages=messages, tools=TOOLS, max_tokens=16, temperature=0
    )
    choice = second.choices[0]
    assert choice.finish_reason in ("stop", "length", "tool_calls")
    if choice.finish_reason != "tool_calls":
        assert isinstance(choice.message.content, str) and choice.message.content
    # what the model saw: the call and its result, in the prompt the worker rendered
    history = [
        messages[0],
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        messages[2],
    ]
    engine = smollm.state.engine
    prompt = engine.template.render(
        [
            {"role": "user", "content": messages[0]["content"]},
            {"role": "assistant", "content": "", "tool_calls": [call.model_dump()]},
            {"role": "tool", "content": result, "tool_call_id": call.id},
        ],
        tools=TOOLS,
    )
    assert result in prompt and call.function.arguments in prompt
    tokens = httpx.post(
        f"{smollm.url}/llcuda/v1/tokenize",
        json={"messages": history, "tools": TOOLS},
        timeout=60,
    ).json()["tokens"]
    assert second.usage.prompt_tokens == len(tokens) == _prompt_length(engine, prompt)


def _prompt_length(engine: Any, text: str) -> int:
    """Tokens of a rendered chat prompt, as the engine counts them (a BOS unless it has one)."""
    bos = engine.template.bos_token
    return len(engine.tokenize(text, add_special=not (bos and text.startswith(bos))))


def test_tool_choice_none_and_required_without_parallel_calls(
    smollm: WorkerServer,
) -> None:
    client = _client(smollm)
    ask = [{"role": "user", "content": "Add 2 and 3."}]
    plain = client.chat.completions.create(model="smollm", messages=ask, max_tokens=1)
    none = client.chat.completions.create(
        model="smollm", messages=ask, tools=TOOLS, tool_choice="none", max_tokens=1
    )
    # 'none': the tools are not shown to the model, the reply is text (a 400 before #17)
    assert none.usage.prompt_tokens == plain.usage.prompt_tokens
    assert none.choices[0].message.tool_calls is None
    auto = client.chat.completions.create(model="smollm", messages=ask, tools=TOOLS, max_tokens=1)
    assert auto.usage.prompt_tokens > plain.usage.prompt_tokens  # they are in the prompt
    one = client.chat.completions.create(
        model="smollm",
        messages=ask,
        tools=TOOLS,
        tool_choice="required",
        parallel_tool_calls=False,
        max_tokens=200,
        temperature=0,
    )
    assert one.choices[0].finish_reason == "tool_calls"
    [call] = one.choices[0].message.tool_calls
    jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


# --- templates with tool support, on the tiny random model (the grammar decides the text) ---

QWEN_STYLE = """{%- if tools %}<|im_start|>system
You are a helpful assistant.

# Tools
<tools>
{%- for tool in tools %}
{{ tool | tojson }}
{%- endfor %}
</tools>
Return each call as <tool_call>
{"name": <function-name>, "arguments": <args-json-object>}
</tool_call><|im_end|>
{% endif %}
{%- for message in messages %}
{%- if message.role == 'tool' %}<|im_start|>user
<tool_response>
{{ message.content }}
</tool_response><|im_end|>
{% elif message.role == 'assistant' and message.tool_calls %}<|im_start|>assistant
{%- for tool_call in message.tool_calls %}
{%- set tool_call = tool_call.function %}
<tool_call>
{"name": "{{ tool_call.name }}", "arguments": {{ tool_call.arguments | tojson }}}
</tool_call>
{%- endfor %}<|im_end|>
{% else %}<|im_start|>{{ message.role }}
{{ message.content }}<|im_end|>
{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""
"""Written for these tests in the style of Qwen2.5's template (tools as JSON lines in the
system turn, ``<tool_call>`` blocks, results as ``<tool_response>`` user turns)."""

LLAMA3_STYLE = """{{ bos_token }}
{%- if tools %}<|start_header_id|>system<|end_header_id|>

Environment: ipython
Reply with {"name": function name, "parameters": dictionary of argument name and its value}.
{% for t in tools %}{{ t | tojson(indent=4) }}
{% endfor %}<|eot_id|>
{%- endif %}
{%- for message in messages %}
{%- if message.role == 'tool' %}<|start_header_id|>ipython<|end_header_id|>

{{ message.content }}<|eot_id|>
{%- elif message.tool_calls %}<|start_header_id|>assistant<|end_header_id|>

{% for tc in message.tool_calls %}<|python_tag|>{"name": "{{ tc.function.name }}", \
"parameters": {{ tc.function.arguments | tojson }}}{% endfor %}<|eom_id|>
{%- else %}<|start_header_id|>{{ message.role }}<|end_header_id|>

{{ message.content }}<|eot_id|>
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>

{% endif %}"""
"""In the style of Llama 3.1's (``ipython``, ``parameters``, ``<|python_tag|>``)."""

MISTRAL_STYLE = """{{ bos_token }}
{%- for message in messages %}
{%- if message.role == 'user' %}
{%- if loop.last and tools %}[AVAILABLE_TOOLS]{{ tools | tojson }}[/AVAILABLE_TOOLS]{% endif %}
[INST]{{ message.content }}[/INST]
{%- elif message.role == 'assistant' and message.tool_calls %}[TOOL_CALLS]\
{{ message.tool_calls | map(attribute='function') | list | tojson }}{{ eos_token }}
{%- elif message.role == 'assistant' %}{{ message.content }}{{ eos_token }}
{%- elif message.role == 'tool' %}[TOOL_RESULTS]{"content": {{ message.content | tojson }}}\
[/TOOL_RESULTS]
{%- endif %}
{%- endfor %}"""
"""In the style of Mistral v3's (``[AVAILABLE_TOOLS]``, ``[TOOL_CALLS]`` JSON arrays)."""

STYLES = {"qwen": QWEN_STYLE, "llama3": LLAMA3_STYLE, "mistral": MISTRAL_STYLE}
PICK = {
    "type": "function",
    "function": {
        "name": "pick",
        "parameters": {
            "type": "object",
            "properties": {
                # bounded values a random model always finishes (its strings: ASCII by pattern)
                "colour": {"enum": ["red", "green", "blue"]},
                "count": {"type": "integer"},
                "label": {"type": "string", "pattern": "^[a-z]{1,6}$"},
                "urgent": {"type": "boolean"},
            },
            "required": ["colour", "count", "label", "urgent"],
            "additionalProperties": False,
        },
    },
}
NOOP = {"type": "function", "function": {"name": "noop", "description": "does nothing"}}
TINY_TOOLS = [PICK, NOOP]


@pytest.fixture(scope="module", params=sorted(STYLES))
def styled_worker(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerServer]:
    from tests.gguf_factory import write_tiny_llama

    style = request.param
    path = tmp_path_factory.mktemp(f"tools-{style}") / f"tiny-{style}.gguf"
    # the tiny vocabulary spells most text byte by byte: the tools take ~2,400 tokens
    write_tiny_llama(path, context_length=8192, chat_template=STYLES[style])
    with WorkerServer(tiny_config(path, n_ctx=6144, model_name=style, parallel=1)) as worker:
        yield worker


def _check_pick(call: Any) -> None:
    assert call.function.name == "pick"
    jsonschema.validate(json.loads(call.function.arguments), PICK["function"]["parameters"])


def test_each_template_style_renders_the_tools_and_its_calls_parse(
    styled_worker: WorkerServer,
) -> None:
    support = styled_worker.state.engine.template.tool_support
    style = styled_worker.state.config.model_name
    assert support.takes_tools and support.format == {"qwen": "hermes"}.get(style, style)
    client = _client(styled_worker, API_KEY)
    ask = [{"role": "user", "content": "pick one"}]
    named = {"type": "function", "function": {"name": "pick"}}
    reply = client.chat.completions.create(
        model=style, messages=ask, tools=TINY_TOOLS, tool_choice=named, max_tokens=300
    )
    assert reply.choices[0].finish_reason == "tool_calls", reply.choices[0].message
    [call] = reply.choices[0].message.tool_calls
    _check_pick(call)
    streamed = client.chat.completions.create(
        model=style,
        messages=ask,
        tools=TINY_TOOLS,
        tool_choice="required",
        parallel_tool_calls=False,
        max_tokens=300,
        stream=True,
    )
    calls: dict[int, dict[str, str]] = {}
    reasons = []
    for chunk in streamed:
        for choice in chunk.choices:
            reasons.append(choice.finish_reason)
            for tc in choice.delta.tool_calls or []:
                entry = calls.setdefault(tc.index, {"name": "", "arguments": ""})
                entry["name"] += tc.function.name or ""
                entry["arguments"] += tc.function.arguments or ""
    assert reasons[-1] == "tool_calls" and len(calls) == 1
    [entry] = calls.values()
    assert entry["name"] in ("pick", "noop")
    if entry["name"] == "pick":
        jsonschema.validate(json.loads(entry["arguments"]), PICK["function"]["parameters"])
    else:
        assert json.loads(entry["arguments"]) == {}


def test_several_required_calls_are_each_valid(styled_worker: WorkerServer) -> None:
    reply = _client(styled_worker, API_KEY).chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "pick"}],
        tools=[PICK],
        tool_choice="required",
        max_tokens=400,
    )
    choice = reply.choices[0]
    # a random model may go on calling until max_tokens; every call it finished is valid
    assert choice.finish_reason in ("tool_calls", "length")
    assert choice.message.tool_calls
    for call in choice.message.tool_calls:
        _check_pick(call)


def test_the_history_goes_back_through_the_template(styled_worker: WorkerServer) -> None:
    history = [
        {"role": "user", "content": "pick one"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "pick", "arguments": '{"colour": "red"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "picked <red> & done"},
    ]
    template = styled_worker.state.engine.template
    text = template.render(history, tools=TINY_TOOLS)
    assert "picked <red> & done" in text
    assert '"colour": "red"' in text  # the arguments as an object, not a quoted string
    assert '"{\\"colour' not in text
    assert '"name": "pick"' in text  # the tools, keys in their order, as transformers writes
    body = {"model": "tiny", "messages": history, "tools": TINY_TOOLS, "max_tokens": 2}
    resp = httpx.post(
        f"{styled_worker.url}/v1/chat/completions", json=body, headers=auth(), timeout=60
    )
    assert resp.status_code == 200, resp.text
    engine = styled_worker.state.engine
    assert resp.json()["usage"]["prompt_tokens"] == _prompt_length(engine, text)


# --- refusals ---------------------------------------------------------------------------------

MESSAGES = [{"role": "user", "content": "hi"}]
BAD: list[tuple[dict[str, Any], str, str]] = [
    ({"tools": {"type": "function"}}, "tools", "must be a list"),
    ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools", "only"),
    ({"tools": [{"type": "function", "function": {"name": "no spaces"}}]}, "tools", "name"),
    ({"tools": [WEATHER, WEATHER]}, "tools", "twice"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": 3}}]}, "tools", ""),
    ({"tools": TOOLS, "tool_choice": "always"}, "tool_choice", "must be"),
    (
        {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "x"}}},
        "tool_choice",
        "not in 'tools'",
    ),
    ({"tool_choice": "required"}, "tool_choice", "needs 'tools'"),
    ({"tools": TOOLS, "parallel_tool_calls": "yes"}, "parallel_tool_calls", "true or false"),
    ({"tools": TOOLS, "response_format": {"type": "json_object"}}, "response_format", "none"),
    ({"functions": [WEATHER["function"]]}, "functions", "deprecated"),
    (
        {"messages": [{"role": "assistant", "tool_calls": [{"function": {}}]}]},
        "messages",
        "function.name",
    ),
    (
        {
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "f",
                        "parameters": {"$ref": "https://example.com/schema.json"},
                    },
                }
            ],
            "tool_choice": "required",
        },
        "tools",
        "not supported",
    ),
]


@pytest.mark.parametrize(("extra", "param", "words"), BAD)
def test_bad_tool_fields_are_a_400_naming_the_field(
    tiny_worker: WorkerServer, extra: dict[str, Any], param: str, words: str
) -> None:
    body = {"model": "tiny", "messages": MESSAGES, "max_tokens": 2, **extra}
    resp = httpx.post(f"{tiny_worker.url}/v1/chat/completions", json=body, headers=auth())
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["param"] == param and words in error["message"], error


def test_tools_on_completions_are_refused_and_none_allows_a_response_format(
    tiny_worker: WorkerServer,
) -> None:
    body = {"model": "tiny", "prompt": "x", "tools": TOOLS, "max_tokens": 2}
    resp = httpx.post(f"{tiny_worker.url}/v1/completions", json=body, headers=auth())
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "tools"
    body = {
        "model": "tiny",
        "messages": MESSAGES,
        "tools": TOOLS,
        "tool_choice": "none",
        "response_format": {"type": "json_schema", "json_schema": {"schema": {"enum": ["a"]}}},
        "max_tokens": 10,
        "temperature": 0,
    }
    resp = httpx.post(f"{tiny_worker.url}/v1/chat/completions", json=body, headers=auth())
    assert resp.status_code == 200, resp.text
    assert resp.json()["choices"][0]["message"]["content"] == '"a"'


def test_a_remote_engine_refuses_tools() -> None:
    from llcuda_tui.core.engine import GenerationRequest
    from llcuda_tui.core.errors import UserInputError
    from llcuda_tui.core.worker import protocol as P

    request = GenerationRequest(messages=MESSAGES, tools=TOOLS)
    with pytest.raises(UserInputError, match="tools"):
        P.request_payload(request, "tiny")


def test_the_whole_calls_of_an_array_cut_short_count() -> None:
    text = '[{"name": "add", "arguments": {"a": 1, "b": 2}}, {"name": "add", "argum'
    reply = parse_reply(text, NAMES)
    assert _calls(reply) == [("add", {"a": 1, "b": 2})]
    assert reply.content == '{"name": "add", "argum'  # the cut-off rest stays text
    streamed, calls = _stream(text, [5, 30, 60])
    assert [c["name"] for c in calls] == ["add"] and streamed == reply.content


@pytest.mark.parametrize("field", ["tools", "response_format"])
def test_a_schema_asking_for_a_billion_repetitions_is_refused_at_once(
    tiny_worker: WorkerServer, field: str
) -> None:
    """The converter writes maxLength N as N nested rules: for 10**9 it would write gigabytes."""
    schema = {"type": "object", "properties": {"s": {"type": "string", "maxLength": 10**9}}}
    body: dict[str, Any] = {"model": "tiny", "messages": MESSAGES, "max_tokens": 2}
    if field == "tools":
        body["tools"] = [{"type": "function", "function": {"name": "f", "parameters": schema}}]
        body["tool_choice"] = "required"
    else:
        body["response_format"] = {"type": "json_schema", "json_schema": {"schema": schema}}
    resp = httpx.post(
        f"{tiny_worker.url}/v1/chat/completions", json=body, headers=auth(), timeout=60
    )
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["param"] == field and "repetitions" in error["message"], error
