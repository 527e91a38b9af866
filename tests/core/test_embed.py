"""Embeddings in-process (core/engine/_embed.py): a second context on the engine's model, a
tiny BERT-style encoder written by the tests (its GGUF declares the pooling) and the starter
chat model with mean pooling of its last hidden state."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from llcuda_tui.core.engine import Embedder, EmbeddingsUnavailable, Engine, EngineConfig
from llcuda_tui.core.errors import ContextLengthError, EngineError, UserInputError
from tests.gguf_factory import write_tiny_bert

pytestmark = pytest.mark.timeout(120)
TEXTS = ["hello world", "the cat sat on the mat", "hello world"]


@pytest.fixture(scope="module")
def bert(tiny_bert: Path) -> Iterator[Engine]:
    with Engine.load(EngineConfig(tiny_bert, n_ctx=64, n_threads=1)) as engine:
        yield engine


@pytest.fixture(scope="module")
def smollm(smollm_path: Path, cpu_threads: int) -> Iterator[Engine]:
    with Engine.load(EngineConfig(smollm_path, n_ctx=256, n_threads=cpu_threads)) as engine:
        yield engine


def _embed(engine: Engine, embedder: Embedder, texts: list[str]) -> np.ndarray:
    return embedder.embed([engine.tokenize(t) for t in texts]).vectors


def test_an_encoder_embeds_with_the_pooling_its_gguf_declares(bert: Engine) -> None:
    with bert.open_embedder() as embedder:
        assert (embedder.pooling, embedder.n_embd, embedder.n_ctx) == ("mean", 32, 64)
        tokens = [bert.tokenize(t) for t in TEXTS]
        assert tokens[0][0] == 2 and tokens[0][-1] == 3  # [CLS] ... [SEP]
        result = embedder.embed(tokens)
    assert result.prompt_tokens == sum(len(t) for t in tokens)
    v = result.vectors
    assert v.shape == (3, 32) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-6)
    cos = v @ v.T
    assert cos[0, 2] == pytest.approx(1.0, abs=1e-5)
    assert cos[0, 1] < 0.999


def test_a_batch_gives_what_each_input_gives_alone(bert: Engine) -> None:
    with bert.open_embedder() as embedder:
        together = _embed(bert, embedder, TEXTS)
        alone = np.stack([_embed(bert, embedder, [t])[0] for t in TEXTS])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_inputs_past_one_call_are_split_into_several(bert: Engine) -> None:
    # 40 inputs of 12 tokens: more sequences (32) and more tokens (64) than one call holds
    texts = [f"the cat sat on the mat {i}" for i in range(40)]
    with bert.open_embedder() as embedder:
        many = _embed(bert, embedder, texts)
        one = _embed(bert, embedder, texts[37:38])
    assert many.shape == (40, 32)
    np.testing.assert_allclose(many[37], one[0], atol=1e-5)
    assert not np.allclose(many[0], many[1], atol=1e-4)  # the digits differ: so do the vectors


def test_cls_pooling_is_not_mean_pooling(bert: Engine) -> None:
    with bert.open_embedder() as mean, bert.open_embedder("cls") as cls:
        assert cls.pooling == "cls"
        a, b = _embed(bert, mean, TEXTS[:1]), _embed(bert, cls, TEXTS[:1])
    assert not np.allclose(a, b, atol=1e-3)


def test_what_cannot_be_embedded_is_refused(bert: Engine) -> None:
    with bert.open_embedder() as embedder:
        with pytest.raises(ContextLengthError, match=r"input 1 has 66 tokens .* holds 64"):
            embedder.embed([[2, 3], [2] * 66])
        with pytest.raises(UserInputError, match="token id 9999, outside the vocabulary"):
            embedder.embed([[2, 9999, 3]])
        with pytest.raises(UserInputError, match="input 0 is empty"):
            embedder.embed([[]])
        with pytest.raises(UserInputError, match="nothing to embed"):
            embedder.embed([])
        with pytest.raises(UserInputError, match="pooling 'rank'"):
            bert.open_embedder("rank")


def test_a_bert_gguf_without_pooling_needs_one_asked_for(tmp_path: Path) -> None:
    path = write_tiny_bert(tmp_path / "no-pooling.gguf", pooling=0)
    with Engine.load(EngineConfig(path, n_ctx=64, n_threads=1)) as engine:
        with pytest.raises(EmbeddingsUnavailable, match="declares no pooling type"):
            engine.open_embedder()
        with engine.open_embedder(default="mean") as embedder:
            assert embedder.pooling == "mean"


def test_the_engine_frees_its_embedders_before_its_model(tiny_bert: Path) -> None:
    engine = Engine.load(EngineConfig(tiny_bert, n_ctx=64, n_threads=1))
    embedder = engine.open_embedder()
    engine.close()
    with pytest.raises(EngineError, match="closed"):
        embedder.embed([[2, 3]])


def test_a_generative_model_embeds_by_mean_pooling_when_asked(smollm: Engine) -> None:
    with pytest.raises(EmbeddingsUnavailable, match="generative model"):
        smollm.open_embedder()
    with smollm.open_embedder("mean") as embedder:
        assert (embedder.pooling, embedder.n_embd) == ("mean", 576)
        v = _embed(smollm, embedder, TEXTS)
        alone = _embed(smollm, embedder, TEXTS[1:2])
    cos = v @ v.T
    assert cos[0, 0] == pytest.approx(1.0, abs=1e-5)
    assert cos[0, 2] == pytest.approx(1.0, abs=1e-5)
    assert cos[0, 1] < 0.99
    np.testing.assert_allclose(v[1], alone[0], atol=1e-4)


def test_last_token_pooling_of_a_causal_model_is_its_last_hidden_state(smollm: Engine) -> None:
    # the last token's hidden state: the same text gives the same vector, a longer one (whose
    # last token attends to more) another
    tokens = smollm.tokenize("hello world")
    longer = smollm.tokenize("hello world and more")
    with smollm.open_embedder("last") as embedder:
        v = embedder.embed([tokens, longer, tokens]).vectors
    assert float(v[0] @ v[2]) == pytest.approx(1.0, abs=1e-5)
    assert float(v[0] @ v[1]) < 0.999
