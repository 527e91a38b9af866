"""Constrained decoding through real workers and the real openai client (issue #17):
``response_format`` ``json_schema`` / ``json_object``, llama-server's ``grammar`` and
``json_schema`` fields, and the in-process engine and ``llcuda infer`` with the same grammars."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llcuda_tui.core.engine import (
    Engine,
    EngineConfig,
    GenerationRequest,
    SamplingParams,
    json_schema_grammar,
)
from llcuda_tui.core.errors import GrammarError
from llcuda_tui.core.worker import WorkerServer
from tests.core.worker.conftest import API_KEY, auth

pytestmark = pytest.mark.timeout(300)

NAME = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8)
LEAF = st.one_of(
    # a random model emits byte tokens that are not UTF-8 (the grammar passes them as
    # characters): its strings are limited to ASCII by a pattern
    st.builds(lambda n: {"type": "string", "pattern": f"^[a-z ]{{0,{n}}}$"}, st.integers(0, 6)),
    st.just({"type": "integer"}),  # ranges: not in the converter (docs/worker.md)
    st.just({"type": "boolean"}),
    st.just({"type": "null"}),
    st.lists(NAME, min_size=1, max_size=3, unique=True).map(lambda e: {"enum": e}),
)
"""Values the random tiny model always finishes: bounded strings and numbers."""


def _object(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(NAME, children, min_size=1, max_size=4).map(
        lambda props: {
            "type": "object",
            "properties": props,
            "required": sorted(props),
            "additionalProperties": False,
        }
    )


SCHEMA = _object(
    st.one_of(
        LEAF, _object(LEAF), st.builds(lambda i: {"type": "array", "items": i, "maxItems": 2}, LEAF)
    )
)


def _client(worker: WorkerServer, key: str = API_KEY) -> Any:
    import openai

    return openai.OpenAI(base_url=f"{worker.url}/v1", api_key=key, max_retries=0)


@settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(schema=SCHEMA)
def test_json_schema_replies_parse_and_validate(tiny_worker: WorkerServer, schema: dict) -> None:
    reply = _client(tiny_worker).chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "JSON please"}],
        max_tokens=400,
        temperature=0,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "thing", "schema": schema, "strict": True},
        },
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "stop", choice.message.content
    jsonschema.validate(json.loads(choice.message.content), schema)


def test_the_starter_model_answers_a_schema_streamed(smollm_worker: WorkerServer) -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 12},
            "age": {"type": "integer", "minimum": 0, "maximum": 150},
        },
        "required": ["name", "age"],
    }
    stream = _client(smollm_worker).chat.completions.create(
        model="smollm",
        messages=[{"role": "user", "content": "Describe a person as JSON."}],
        max_tokens=60,
        temperature=0,
        stream=True,
        response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": schema}},
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    jsonschema.validate(json.loads(text), schema)


def test_json_object_and_llama_server_fields(tiny_worker: WorkerServer) -> None:
    client = _client(tiny_worker)
    reply = client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=200,
        temperature=0,
        response_format={"type": "json_object"},
        extra_body={"ignore_eos": False},
    )
    # a random model may run out of tokens mid-object; a finished one is a JSON object
    if reply.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(reply.choices[0].message.content), dict)
    else:
        assert reply.choices[0].message.content.lstrip().startswith("{")
    body = {"prompt": "x", "max_tokens": 20, "temperature": 0, "grammar": 'root ::= "yes" | "no"'}
    resp = httpx.post(f"{tiny_worker.url}/v1/completions", json=body, headers=auth(), timeout=30)
    assert resp.json()["choices"][0]["text"] in ("yes", "no")
    schema = {"enum": ["red", "green"]}
    body = {"prompt": "x", "max_tokens": 20, "temperature": 0, "json_schema": schema}
    resp = httpx.post(f"{tiny_worker.url}/v1/completions", json=body, headers=auth(), timeout=30)
    assert json.loads(resp.json()["choices"][0]["text"]) in ("red", "green")


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"grammar": "root ::= ("}, "grammar"),
        ({"grammar": 5}, "grammar"),
        ({"json_schema": "nope"}, "json_schema"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"schema": 3}}},
            "response_format",
        ),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"schema": {"$ref": "https://example.com/s.json"}},
                }
            },
            "response_format",
        ),
        ({"grammar": 'root ::= "a"', "json_schema": {}}, "json_schema"),
    ],
)
def test_bad_grammars_are_a_400_naming_the_field(
    tiny_worker: WorkerServer, extra: dict[str, Any], param: str
) -> None:
    body = {"prompt": "x", "max_tokens": 2, **extra}
    resp = httpx.post(f"{tiny_worker.url}/v1/completions", json=body, headers=auth(), timeout=30)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == param
    assert httpx.get(f"{tiny_worker.url}/health").status_code == 200


def test_the_in_process_engine_follows_a_grammar(tiny_gguf: Path) -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    grammar = json_schema_grammar(schema)
    with Engine.load(EngineConfig(tiny_gguf, n_ctx=256, n_threads=1)) as engine:
        text, record = engine.generate(
            GenerationRequest(
                prompt="x", max_tokens=50, sampling=SamplingParams(temperature=0, grammar=grammar)
            )
        )
        assert record.stop_reason == "eos"
        assert json.loads(text) in ({"ok": True}, {"ok": False})
        free, _ = engine.generate(GenerationRequest(prompt="x", max_tokens=8, ignore_eos=True))
        assert free != text  # the next request is not constrained
        with pytest.raises(GrammarError):
            engine.generate(
                GenerationRequest(prompt="x", sampling=SamplingParams(grammar="root ::= ("))
            )


def test_infer_takes_a_json_schema_and_a_grammar_file(tiny_gguf: Path, tmp_path: Path) -> None:
    schema = tmp_path / "s.json"
    schema.write_text(json.dumps({"enum": ["alpha", "beta"]}))
    grammar = tmp_path / "g.gbnf"
    grammar.write_text('root ::= "yes" | "no"\n')
    base = [sys.executable, "-m", "llcuda_tui", "infer", "-m", str(tiny_gguf), "-p", "x"]
    base += ["--temp", "0", "-n", "20", "--ctx", "256", "--threads", "1"]
    out = subprocess.run([*base, "--json-schema", str(schema)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) in ("alpha", "beta")
    out = subprocess.run([*base, "--grammar", str(grammar)], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() in ("yes", "no"), out.stderr
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    out = subprocess.run([*base, "--json-schema", str(bad)], capture_output=True, text=True)
    assert out.returncode == 2 and "is not JSON" in out.stderr
    assert "Traceback" not in out.stderr
