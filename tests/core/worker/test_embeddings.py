"""``POST /v1/embeddings`` with the real ``openai`` client against real workers on 127.0.0.1
(issue #17 item 4): a tiny BERT-style encoder whose GGUF declares mean pooling (embeds with no
flag), the starter chat model with ``embeddings=True`` (``--embeddings``: mean pooling of the
last hidden state) and without it (a 400)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from llcuda_tui.core.engine import EngineConfig
from llcuda_tui.core.worker import WorkerConfig, WorkerServer
from tests.core.worker.conftest import API_KEY, auth, tiny_config

pytestmark = pytest.mark.timeout(120)
TEXTS = ["hello world", "the cat sat on the mat", "the dog sat on the blue mat"]


@pytest.fixture(scope="module")
def bert_worker(tiny_bert: Path) -> Iterator[WorkerServer]:
    """The tiny encoder: 2 slots of its 64 positions, API key :data:`API_KEY`, no flag."""
    with WorkerServer(tiny_config(tiny_bert, n_ctx=64, model_name="bert", parallel=2)) as w:
        yield w


@pytest.fixture(scope="module")
def smollm_embed_worker(smollm_path: Path, cpu_threads: int) -> Iterator[WorkerServer]:
    """The starter chat model served with ``embeddings=True`` (``llcuda serve --embeddings``)."""
    cfg = WorkerConfig(
        engine=EngineConfig(smollm_path, n_ctx=256, n_threads=cpu_threads),
        model_name="smollm",
        parallel=1,
        embeddings=True,
    )
    with WorkerServer(cfg) as worker:
        yield worker


def _client(worker: WorkerServer) -> Any:
    import openai

    return openai.OpenAI(base_url=f"{worker.url}/v1", api_key=API_KEY, max_retries=0)


def _vectors(response: Any) -> np.ndarray:
    """The vectors of an SDK response: floats, or base64 strings when the caller asked for
    them (the SDK asks for base64 itself when no format is given, and decodes it)."""
    rows = [
        np.frombuffer(base64.b64decode(d.embedding), dtype="<f4")
        if isinstance(d.embedding, str)
        else d.embedding
        for d in response.data
    ]
    return np.array(rows, dtype=np.float64)


def _post(worker: WorkerServer, body: dict[str, Any]) -> httpx.Response:
    # json.dumps escapes a lone surrogate (valid JSON) where httpx's json= cannot encode it
    headers = {**auth(), "content-type": "application/json"}
    url = f"{worker.url}/v1/embeddings"
    return httpx.post(url, content=json.dumps(body), headers=headers, timeout=60)


@pytest.mark.parametrize("fmt", ["float", "base64"])
def test_an_encoder_embeds_a_batch_in_order(bert_worker: WorkerServer, fmt: str) -> None:
    client = _client(bert_worker)
    batch = client.embeddings.create(model="bert", input=TEXTS, encoding_format=fmt)
    assert [d.index for d in batch.data] == [0, 1, 2]
    assert batch.model == "bert" and batch.object == "list"
    v = _vectors(batch)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    for i, text in enumerate(TEXTS):  # each as it comes alone: the batch kept the order
        alone = _vectors(client.embeddings.create(model="bert", input=text, encoding_format=fmt))
        assert float(alone[0] @ v[i]) == pytest.approx(1.0, abs=1e-5)
    assert float(v[0] @ v[1]) < 1 - 1e-3
    assert float(v[1] @ v[2]) < 1 - 1e-3


def test_cosine_of_a_text_with_itself_is_1_and_with_another_below(
    bert_worker: WorkerServer,
) -> None:
    v = _vectors(_client(bert_worker).embeddings.create(model="bert", input=[*TEXTS, TEXTS[0]]))
    assert float(v[0] @ v[3]) == pytest.approx(1.0, abs=1e-5)
    assert float(v[0] @ v[1]) < float(v[0] @ v[3])


def test_base64_is_the_same_little_endian_float32s(bert_worker: WorkerServer) -> None:
    floats = _post(bert_worker, {"input": TEXTS, "encoding_format": "float"}).json()
    packed = _post(bert_worker, {"input": TEXTS, "encoding_format": "base64"}).json()
    for f, b in zip(floats["data"], packed["data"], strict=True):
        decoded = np.frombuffer(base64.b64decode(b["embedding"]), dtype="<f4")
        assert decoded.tolist() == f["embedding"]  # exactly: float32 values sent as JSON floats
    assert floats["usage"] == packed["usage"]


def test_usage_counts_the_tokens_embedded(bert_worker: WorkerServer) -> None:
    tokens = [
        httpx.post(
            f"{bert_worker.url}/llcuda/v1/tokenize", json={"content": t}, headers=auth()
        ).json()["tokens"]
        for t in TEXTS
    ]
    usage = _client(bert_worker).embeddings.create(model="bert", input=TEXTS).usage
    n = sum(len(t) for t in tokens)
    assert (usage.prompt_tokens, usage.total_tokens) == (n, n)


def test_token_id_inputs_embed_like_their_text(bert_worker: WorkerServer) -> None:
    client = _client(bert_worker)
    tokens = [
        httpx.post(
            f"{bert_worker.url}/llcuda/v1/tokenize", json={"content": t}, headers=auth()
        ).json()["tokens"]
        for t in TEXTS[:2]
    ]
    text = _vectors(client.embeddings.create(model="bert", input=TEXTS[:2]))
    one = _vectors(client.embeddings.create(model="bert", input=tokens[0]))  # [ids]
    many = _vectors(client.embeddings.create(model="bert", input=tokens))  # [[ids], [ids]]
    assert float(one[0] @ text[0]) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(many, text, atol=1e-5)


def test_dimensions_only_as_the_model_has_them(bert_worker: WorkerServer) -> None:
    ok = _client(bert_worker).embeddings.create(model="bert", input="hello", dimensions=32)
    assert len(ok.data[0].embedding) == 32
    resp = _post(bert_worker, {"input": "hello", "dimensions": 16})
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["param"] == "dimensions" and "32" in error["message"]


def test_an_input_longer_than_the_context_is_context_length_exceeded(
    bert_worker: WorkerServer,
) -> None:
    import openai

    with pytest.raises(openai.BadRequestError) as caught:
        _client(bert_worker).embeddings.create(model="bert", input=["hello", "hello " * 80])
    error = caught.value.body
    assert (error["code"], error["param"]) == ("context_length_exceeded", "input")
    assert "input 1 has 82 tokens" in error["message"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "input"),
        ({"input": []}, "input"),
        ({"input": [[]]}, "input"),
        ({"input": 5}, "input"),
        ({"input": ["a", 5]}, "input"),
        ({"input": [1, "a"]}, "input"),
        ({"input": [True]}, "input"),
        ({"input": [2, 99999, 3]}, "input"),
        ({"input": ["\ud800"]}, "input[0]"),
        ({"input": ["hi"] * 2049}, "input"),
        ({"input": "hi", "encoding_format": "int8"}, "encoding_format"),
        ({"input": "hi", "dimensions": "32"}, "dimensions"),
        ({"input": "hi", "dimensions": 0}, "dimensions"),
    ],
)
def test_bad_requests_are_a_400_naming_the_field(
    bert_worker: WorkerServer, body: dict[str, Any], param: str
) -> None:
    resp = _post(bert_worker, body)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == param


def test_the_api_key_is_needed(bert_worker: WorkerServer) -> None:
    resp = httpx.post(f"{bert_worker.url}/v1/embeddings", json={"input": "hi"}, timeout=30)
    assert resp.status_code == 401


def test_info_tells_how_the_worker_embeds(bert_worker: WorkerServer) -> None:
    info = httpx.get(f"{bert_worker.url}/llcuda/v1/info", headers=auth(), timeout=30).json()
    assert info["embeddings"] == {"pooling": "mean", "dimensions": 32, "n_ctx": 64}


def test_a_generative_model_without_the_flag_is_a_clear_400(smollm_worker: WorkerServer) -> None:
    import openai

    client = openai.OpenAI(base_url=f"{smollm_worker.url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="smollm", input="hello")
    error = caught.value.body
    assert (error["code"], error["param"]) == ("model_not_embedding", "model")
    assert "--embeddings" in error["message"]


def test_a_generative_model_with_the_flag_mean_pools(smollm_embed_worker: WorkerServer) -> None:
    import openai

    client = openai.OpenAI(base_url=f"{smollm_embed_worker.url}/v1", api_key="x", max_retries=0)
    batch = client.embeddings.create(model="smollm", input=[*TEXTS, TEXTS[0]])
    v = _vectors(batch)
    assert v.shape == (4, 576)
    assert float(v[0] @ v[0]) == pytest.approx(1.0, abs=1e-5)
    assert float(v[0] @ v[3]) == pytest.approx(1.0, abs=1e-5)
    assert float(v[0] @ v[1]) < 1 - 1e-3
    floats = client.embeddings.create(model="smollm", input=TEXTS[1], encoding_format="float")
    assert float(np.array(floats.data[0].embedding) @ v[1]) == pytest.approx(1.0, abs=1e-5)
    ids = client.embeddings.create(model="smollm", input=[[28120, 905]])  # "hello world"
    assert float(_vectors(ids)[0] @ v[0]) == pytest.approx(1.0, abs=1e-5)
    # generation still works beside it
    chat = client.chat.completions.create(
        model="smollm", messages=[{"role": "user", "content": "hi"}], max_tokens=3
    )
    assert chat.usage.completion_tokens >= 1


def test_serve_flags_reach_the_worker(worker_process: Any, tiny_bert: Path) -> None:
    """``llcuda serve --pooling cls`` (a subprocess): the encoder pools as asked, not as its
    GGUF says."""
    worker = worker_process.start("-m", str(tiny_bert), "--ctx", "64", "--pooling", "cls")
    info = httpx.get(f"{worker.url}/llcuda/v1/info", timeout=30).json()
    assert info["embeddings"]["pooling"] == "cls"
    resp = httpx.post(f"{worker.url}/v1/embeddings", json={"input": ["hello", "world"]}, timeout=60)
    assert resp.status_code == 200, resp.text
    assert [d["index"] for d in resp.json()["data"]] == [0, 1]
