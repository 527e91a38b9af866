"""Issue #23, item 20 (in part): a prompt far longer in bytes than any context could hold is
refused before it is tokenized (a 500 KB prompt took 127 s to tokenize on a small vocabulary
before "prompt too long"), in the engine and through a real worker's batch engine."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from llcuda_tui.core.engine import Engine, EngineConfig, GenerationRequest
from llcuda_tui.core.errors import ContextLengthError
from llcuda_tui.core.worker import WorkerServer
from tests.core.worker.conftest import tiny_config

HUGE = "lorem ipsum dolor " * 28_000  # 504 KB


def test_a_huge_prompt_is_refused_by_its_bytes(tiny_gguf: Path) -> None:
    with Engine.load(EngineConfig(tiny_gguf, n_ctx=256, n_threads=1)) as engine:
        with pytest.raises(ContextLengthError, match=r"the prompt has 504000 bytes: more than 256"):
            engine.count_tokens(GenerationRequest(prompt=HUGE))
        chat = GenerationRequest(messages=[{"role": "user", "content": HUGE}])
        with pytest.raises(ContextLengthError, match="bytes"):
            engine.count_tokens(chat)
        # a prompt that fits is tokenized as before, and one over the context but short in
        # bytes still gets the token count in its message
        assert engine.count_tokens(GenerationRequest(prompt="lorem ipsum")) > 0
        with pytest.raises(ContextLengthError, match="tokens but the context holds 256"):
            engine.generate(GenerationRequest(prompt="lorem ipsum dolor " * 200, max_tokens=1))


def test_the_worker_refuses_it_as_context_length_exceeded(tiny_gguf: Path) -> None:
    # a sequence holds 1024 tokens: the bound the check must use (not the tiny context of the
    # tokenizer engine inside the batch engine)
    with WorkerServer(tiny_config(tiny_gguf, n_ctx=1024, api_key=None)) as server:
        r = httpx.post(
            f"{server.url}/v1/completions",
            json={"model": "m", "prompt": HUGE, "max_tokens": 4},
            timeout=60,
        )
        assert r.status_code == 400
        err = r.json()["error"]
        assert err["code"] == "context_length_exceeded", err
        assert "504000 bytes: more than 1024 tokens" in err["message"]
        assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200
