"""Embeddings on a GPU (run on the GPU machine: pytest -m gpu): the embedding context of a fully
offloaded model gives the CPU's vectors, and it runs beside the batch engine's generations on
the same model (two contexts, two threads) without changing either's results."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from llcuda_tui.core.engine import (
    Engine,
    EngineConfig,
    GenerationHandle,
    GenerationRequest,
    SamplingParams,
)
from llcuda_tui.core.worker import WorkerConfig, WorkerServer
from llcuda_tui.core.worker.batch import BatchEngine

pytestmark = [pytest.mark.gpu, pytest.mark.timeout(300)]
TEXTS = ["hello world", "the cat sat on the mat", "the dog sat on the blue mat", "hello"]


def _vectors(engine: Engine | BatchEngine, pooling: str | None) -> np.ndarray:
    with engine.open_embedder(pooling) as embedder:
        return embedder.embed([engine.tokenize(t) for t in TEXTS]).vectors


def test_an_offloaded_encoder_embeds_as_on_the_cpu(tiny_bert: Path) -> None:
    with Engine.load(EngineConfig(tiny_bert, n_ctx=64, n_gpu_layers=0, n_threads=2)) as cpu:
        expected = _vectors(cpu, None)
    with Engine.load(EngineConfig(tiny_bert, n_ctx=64, n_gpu_layers=-1)) as gpu:
        assert gpu.info.backend.startswith("CUDA0")
        assert gpu.info.n_layers_offloaded == gpu.info.n_layers
        got = _vectors(gpu, None)
    np.testing.assert_allclose(got, expected, atol=2e-3)


def test_embeddings_beside_batched_generation(tiny_gguf: Path) -> None:
    cfg = EngineConfig(tiny_gguf, n_gpu_layers=-1, n_ctx=512, flash_attn="on")
    greedy = SamplingParams(temperature=0.0)

    def req(prompt: str) -> GenerationRequest:
        # cold both times: a prompt cached by the first run would be decoded in another
        # batch shape, which alone can change greedy text on a random model on the GPU
        return GenerationRequest(
            prompt=prompt, max_tokens=200, sampling=greedy, ignore_eos=True, cache_prompt=False
        )

    with BatchEngine.load(cfg, parallel=4) as batch, batch.open_embedder("mean") as embedder:
        seqs = [batch.tokenize(t) for t in TEXTS]
        idle = embedder.embed(seqs).vectors

        def together() -> tuple[list[GenerationHandle], list[list[str]]]:
            # admitted in one pass, so both runs decode the same batches step for step (on a
            # GPU, greedy text on a random model can change with the batch's make-up alone)
            texts: list[list[str]] = [[] for _ in TEXTS]
            calls = [(lambda c, i=i: texts[i].append(c.text), None) for i in range(len(TEXTS))]
            return batch.submit_many([req(p) for p in TEXTS], calls), texts

        handles, texts = together()
        for h in handles:
            h.future.result()
        quiet = ["".join(t) for t in texts]
        handles, texts = together()
        busy = []
        while not all(h.future.done() for h in handles):  # embed while they decode
            busy.append(embedder.embed(seqs).vectors)
        for h in handles:
            h.future.result()
    assert busy, "no embedding ran during the generations"
    for vectors in busy:
        np.testing.assert_allclose(vectors, idle, atol=1e-4)
    assert ["".join(t) for t in texts] == quiet


def test_the_gpu_model_served_with_embeddings(gpu_model: Path) -> None:
    import openai

    cfg = WorkerConfig(
        engine=EngineConfig(gpu_model, n_gpu_layers=-1, n_ctx=2048),
        model_name="gpu",
        parallel=4,
        embeddings=True,
    )
    with WorkerServer(cfg) as worker:
        client = openai.OpenAI(base_url=f"{worker.url}/v1", api_key="x", max_retries=0)
        errors: list[BaseException] = []

        def chat() -> None:
            try:
                client.chat.completions.create(
                    model="gpu", messages=[{"role": "user", "content": "hi"}], max_tokens=64
                )
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=chat) for _ in range(4)]
        for t in threads:
            t.start()
        batch = client.embeddings.create(model="gpu", input=[*TEXTS, TEXTS[0]])
        for t in threads:
            t.join()
    assert not errors
    v = np.array([d.embedding for d in batch.data])
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert float(v[0] @ v[4]) == pytest.approx(1.0, abs=1e-4)
    assert float(v[0] @ v[1]) < float(v[0] @ v[4])
