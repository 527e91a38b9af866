"""What real OpenAI clients send and key on, against real workers on 127.0.0.1 (issue #17): the
nulls the openai SDK sends, OpenAI's string error codes and params, ``GET /v1/models/{id}``,
fields refused with a 400 instead of silently ignored, and CORS."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from llcuda_tui.core.worker import WorkerServer
from tests.core.worker.conftest import API_KEY, auth, tiny_config

pytestmark = pytest.mark.timeout(60)
ORIGIN = "http://app.example:3000"


def _client(worker: WorkerServer, key: str = API_KEY) -> Any:
    import openai

    return openai.OpenAI(base_url=f"{worker.url}/v1", api_key=key, max_retries=0)


def _post(worker: WorkerServer, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{worker.url}{path}", json=body, headers=auth(), timeout=30)


# --- the two null bugs --------------------------------------------------------------------------


def test_n_null_is_n_1(tiny_worker: WorkerServer) -> None:
    resp = _post(tiny_worker, "/v1/completions", {"prompt": "hi", "max_tokens": 2, "n": None})
    assert resp.status_code == 200, resp.text
    assert len(resp.json()["choices"]) == 1
    chat = _client(tiny_worker).chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=2, n=None
    )
    assert len(chat.choices) == 1


def test_null_max_completion_tokens_leaves_max_tokens_in_force(tiny_worker: WorkerServer) -> None:
    body = {"prompt": "hi", "max_tokens": 3, "max_completion_tokens": None, "ignore_eos": True}
    resp = _post(tiny_worker, "/v1/completions", body)
    assert resp.status_code == 200, resp.text
    assert resp.json()["usage"]["completion_tokens"] == 3
    body = {"prompt": "hi", "max_tokens": 9, "max_completion_tokens": 2, "ignore_eos": True}
    assert _post(tiny_worker, "/v1/completions", body).json()["usage"]["completion_tokens"] == 2


# --- refused with a 400 naming the field, never silently ignored --------------------------------


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"suffix": "tail"}, "suffix"),  # the tiny model has no fill-in-the-middle tokens
        ({"best_of": 3}, "best_of"),
    ],
)
def test_unsupported_fields_are_a_400_naming_them(
    tiny_worker: WorkerServer, extra: dict[str, Any], param: str
) -> None:
    resp = _post(tiny_worker, "/v1/completions", {"prompt": "hi", "max_tokens": 2, **extra})
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert (error["param"], error["code"]) == (param, "unsupported_parameter")


def test_unknown_response_format_type_is_a_400(tiny_worker: WorkerServer) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "sound"}}
    resp = _post(tiny_worker, "/v1/chat/completions", body)
    assert resp.status_code == 400
    assert resp.json()["error"]["param"] == "response_format"
    assert "'sound'" in resp.json()["error"]["message"]
    body["response_format"] = {"type": "text"}
    assert _post(tiny_worker, "/v1/chat/completions", {**body, "max_tokens": 2}).status_code == 200


# --- OpenAI's error codes and params ------------------------------------------------------------


def test_an_over_long_prompt_is_context_length_exceeded(tiny_worker: WorkerServer) -> None:
    import openai

    client = _client(tiny_worker)
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="tiny", prompt="w " * 3000, max_tokens=2)
    assert caught.value.code == "context_length_exceeded"
    assert caught.value.param == "prompt"
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "w " * 3000}], max_tokens=2
        )
    assert (caught.value.code, caught.value.param) == ("context_length_exceeded", "messages")


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"temperature": -1}, "temperature"),
        ({"top_p": 3}, "top_p"),
        ({"logit_bias": {"99999": 1}}, "logit_bias"),
        ({"prompt": [999999]}, "prompt"),
    ],
)
def test_bad_values_name_their_param(
    tiny_worker: WorkerServer, extra: dict[str, Any], param: str
) -> None:
    resp = _post(tiny_worker, "/v1/completions", {"prompt": "hi", "max_tokens": 2, **extra})
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["param"] == param
    assert isinstance(error["code"], str)


def test_error_codes_are_openais_strings(tiny_worker: WorkerServer) -> None:
    import openai

    with pytest.raises(openai.AuthenticationError) as auth_error:
        _client(tiny_worker, key="wrong-key-0000").models.list()
    assert auth_error.value.code == "invalid_api_key"
    with httpx.Client(base_url=tiny_worker.url, headers=auth(), timeout=5) as http:
        assert http.get("/v2/nothing").json()["error"]["code"] == "unknown_url"
        assert http.get("/v1/completions").json()["error"]["code"] == "method_not_allowed"


# --- GET /v1/models/{id} ------------------------------------------------------------------------


def test_a_model_is_retrieved_by_id(tiny_worker: WorkerServer) -> None:
    import openai

    client = _client(tiny_worker)
    model = client.models.retrieve("tiny")
    assert (model.id, model.object, model.owned_by) == ("tiny", "model", "llcuda")
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("gpt-4o")
    assert caught.value.code == "model_not_found"
    assert "gpt-4o" in caught.value.message


# --- CORS ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cors_worker(tiny_gguf: Path) -> Iterator[WorkerServer]:
    """The tiny model with an API key and one allowed browser origin."""
    with WorkerServer(tiny_config(tiny_gguf, parallel=1, cors_origins=(ORIGIN,))) as worker:
        yield worker


def _preflight(worker: WorkerServer, origin: str) -> httpx.Response:
    headers = {
        "origin": origin,
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type",
    }
    return httpx.options(f"{worker.url}/v1/chat/completions", headers=headers, timeout=5)


def test_cors_preflight_is_answered_without_the_key(cors_worker: WorkerServer) -> None:
    ok = _preflight(cors_worker, ORIGIN)
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in ok.headers["access-control-allow-methods"]
    assert "authorization" in ok.headers["access-control-allow-headers"].lower()
    refused = _preflight(cors_worker, "http://evil.example")
    assert refused.status_code == 400
    assert "access-control-allow-origin" not in refused.headers


def test_cors_replies_with_and_without_the_key(cors_worker: WorkerServer) -> None:
    with httpx.Client(base_url=cors_worker.url, timeout=5) as http:
        keyless = http.get("/v1/models", headers={"origin": ORIGIN})
        assert keyless.status_code == 401  # the key is still needed for the real request
        assert keyless.headers["access-control-allow-origin"] == ORIGIN  # the page can read why
        keyed = http.get("/v1/models", headers={"origin": ORIGIN, **auth()})
        assert keyed.status_code == 200 and keyed.json()["data"][0]["id"] == "tiny"
        assert keyed.headers["access-control-allow-origin"] == ORIGIN
        other = http.get("/v1/models", headers={"origin": "http://evil.example", **auth()})
        assert "access-control-allow-origin" not in other.headers


def test_cors_is_off_by_default(tiny_worker: WorkerServer) -> None:
    resp = _preflight(tiny_worker, ORIGIN)
    assert resp.status_code == 401
    assert "access-control-allow-origin" not in resp.headers


# --- presence / frequency penalties ---------------------------------------------------------------


def test_presence_and_frequency_penalties_change_greedy_text(tiny_worker: WorkerServer) -> None:
    body = {"prompt": "the cat", "max_tokens": 40, "temperature": 0, "ignore_eos": True}

    def text(**extra: float) -> str:
        resp = _post(tiny_worker, "/v1/completions", {**body, **extra})
        assert resp.status_code == 200, resp.text
        return str(resp.json()["choices"][0]["text"])

    plain = text()
    assert text() == plain  # greedy is deterministic
    tokens = _post(tiny_worker, "/llcuda/v1/tokenize", {"content": plain, "add_special": False})
    ids = tokens.json()["tokens"]
    assert len(set(ids)) < len(ids)  # the random model repeats itself: penalties have a target
    assert text(frequency_penalty=2.0) != plain
    assert text(presence_penalty=2.0) != plain
    bad = _post(tiny_worker, "/v1/completions", {**body, "presence_penalty": 3})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "presence_penalty"
