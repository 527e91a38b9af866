"""The engine on real models: the starter GGUFs from PyPI and tiny generated ones (CPU)."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from llcuda_tui.core.engine import (
    Engine,
    EngineConfig,
    GenerationRequest,
    SamplingParams,
    StopMatcher,
)
from llcuda_tui.core.errors import EngineError, ModelLoadError, UserInputError
from tests.gguf_factory import LONG_PIECE, long_piece_id

GREEDY = SamplingParams(temperature=0.0)


@pytest.fixture(scope="module")
def gemma(gemma_path: Path, cpu_threads: int):
    with Engine.load(EngineConfig(gemma_path, n_ctx=4096, n_threads=cpu_threads)) as eng:
        yield eng


@pytest.fixture(scope="module")
def smollm(smollm_path: Path, cpu_threads: int):
    with Engine.load(EngineConfig(smollm_path, n_ctx=2048, n_threads=cpu_threads)) as eng:
        yield eng


@pytest.fixture(scope="module")
def tiny(tiny_gguf: Path, cpu_threads: int):
    with Engine.load(EngineConfig(tiny_gguf, n_ctx=1024, n_threads=cpu_threads)) as eng:
        yield eng


def test_load_reports_backend_and_model_facts(gemma: Engine) -> None:
    info = gemma.info
    assert info.backend == "CPU"
    assert info.architecture == "gemma3"
    assert info.n_layers == 18
    assert info.n_vocab == 262144
    assert info.n_ctx == 4096
    assert info.load_time_s > 0
    assert not info.flash_attn  # auto = off without a GPU
    assert "270M" in info.model_desc


def test_gemma_continues_the_count(gemma: Engine) -> None:
    text, rec = gemma.generate(
        GenerationRequest(prompt="1, 2, 3, 4, 5,", max_tokens=8, sampling=GREEDY)
    )
    assert text.startswith(" 6, 7, 8"), text
    assert rec.generated_tokens == 8
    assert rec.stop_reason == "length"
    assert rec.prompt_tokens == len(gemma.tokenize("1, 2, 3, 4, 5,"))
    assert rec.ttft_s > 0 and rec.decode_tokens_per_s > 0 and rec.prefill_tokens_per_s > 0
    assert rec.backend == "CPU"
    assert len(rec.token_times_s) == 8
    assert rec.token_times_s == sorted(rec.token_times_s)


def test_smollm_chat_greets(smollm: Engine) -> None:
    req = GenerationRequest(
        messages=[{"role": "user", "content": "Say hello."}], max_tokens=64, sampling=GREEDY
    )
    text, rec = smollm.generate(req)
    assert any(w in text.lower() for w in ("hello", "hi", "greetings")), text
    assert rec.stop_reason == "eos"  # the chat template's end-of-turn ends it
    assert smollm.info.chat_template == "gguf"


def test_stop_string_cuts_before_it(gemma: Engine) -> None:
    req = GenerationRequest(prompt="1, 2, 3, 4, 5,", max_tokens=16, sampling=GREEDY, stop=[" 8"])
    text, rec = gemma.generate(req)
    assert rec.stop_reason == "stop"
    assert text == " 6, 7,"


def test_stop_matcher_across_chunk_boundaries() -> None:
    m = StopMatcher(["</end>"])
    out = []
    for piece in ["abc</", "en", "d>tail"]:
        text, hit = m.feed(piece)
        out.append(text)
        if hit:
            break
    assert "".join(out) == "abc" and hit
    m = StopMatcher(["xyz"])
    assert m.feed("ab x")[0] == "ab "  # "x" held back: it may start the stop string
    assert m.feed("y!")[0] == "xy!"
    assert m.flush() == ""


def test_seed_determinism(tiny: Engine) -> None:
    def run(seed: int) -> str:
        sp = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=seed)
        req = GenerationRequest(prompt="hello world", max_tokens=24, sampling=sp, ignore_eos=True)
        return tiny.generate(req)[0]

    assert run(42) == run(42)
    assert run(42) != run(43)


def test_greedy_is_repeatable(gemma: Engine) -> None:
    req = GenerationRequest(prompt="The capital of France is", max_tokens=6, sampling=GREEDY)
    assert gemma.generate(req)[0] == gemma.generate(req)[0]


def test_long_piece_comes_out_whole(tiny: Engine) -> None:
    tok = long_piece_id()
    piece = tiny.token_piece(tok)
    expected = LONG_PIECE.replace("\u2581", " ").encode()
    assert len(expected) > 32
    assert piece == expected
    # generation: a logit bias makes the long piece win every step
    sp = SamplingParams(temperature=0.0, logit_bias={tok: 100.0})
    text, rec = tiny.generate(GenerationRequest(prompt="hello", max_tokens=5, sampling=sp))
    assert rec.generated_tokens == 5
    assert text == expected.decode() * 5


def test_cancel_stops_within_one_token(tiny: Engine) -> None:
    seen: list[str] = []
    first = threading.Event()

    def on_chunk(chunk) -> None:
        seen.append(chunk.text)
        first.set()

    req = GenerationRequest(prompt="hello", max_tokens=1000, sampling=GREEDY, ignore_eos=True)
    handle = tiny.submit(req, on_chunk)
    assert first.wait(10)
    tiny.cancel()
    n_at_cancel = len(seen)
    rec = handle.result(10)
    assert rec.stop_reason == "cancelled"
    # the token being decoded when cancel() came may still arrive, nothing after it
    assert rec.generated_tokens <= n_at_cancel + 1
    assert rec.generated_tokens < 1000


def test_cancel_between_prompt_chunks(gemma_path: Path, cpu_threads: int) -> None:
    cfg = EngineConfig(gemma_path, n_ctx=4096, n_batch=64, n_ubatch=64, n_threads=cpu_threads)
    with Engine.load(cfg) as eng:
        prompt = " ".join(str(i) for i in range(500))  # ~1900 tokens = ~30 chunks
        req = GenerationRequest(prompt=prompt, max_tokens=4, sampling=GREEDY)
        handle = eng.submit(req, lambda c: None)
        time.sleep(0.3)
        eng.cancel()
        rec = handle.result(60)
    assert rec.stop_reason == "cancelled"
    assert rec.generated_tokens == 0
    # stopped between chunks, mid-prefill: not all of them
    assert 0 < rec.prompt_tokens_evaluated < rec.prompt_tokens
    assert rec.prompt_tokens_evaluated % 32 == 0  # chunks end on multiples of KEEP_ALIGN


def test_stream_early_close_cancels(tiny: Engine) -> None:
    req = GenerationRequest(prompt="hello", max_tokens=500, sampling=GREEDY, ignore_eos=True)
    it = tiny.stream(req)
    next(it)
    it.close()
    # the engine is free again: the next generation runs to completion
    _, rec = tiny.generate(
        GenerationRequest(prompt="hello", max_tokens=3, sampling=GREEDY, ignore_eos=True)
    )
    assert rec.generated_tokens == 3


def test_gemma_template_fallback(gemma: Engine) -> None:
    assert gemma.info.chat_template == "fallback:gemma3"
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    rendered = gemma.template.render(msgs)
    assert (
        rendered == "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
    )
    req = GenerationRequest(messages=msgs, max_tokens=1, sampling=GREEDY)
    toks = gemma.prompt_tokens(req)
    assert toks.count(2) == 1 and toks[0] == 2  # exactly one BOS, at the start


def test_token_counting_is_exact(smollm: Engine) -> None:
    msgs = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "2+2?"}]
    req = GenerationRequest(messages=msgs, max_tokens=4, sampling=GREEDY)
    counted = smollm.count_tokens(req)
    _, rec = smollm.generate(req)
    assert counted == rec.prompt_tokens
    rendered = smollm.template.render(msgs)
    assert counted == len(smollm.tokenize(rendered, add_special=False))


def test_prompt_longer_than_context_is_refused(tiny: Engine) -> None:
    req = GenerationRequest(tokens=[5] * 2000, max_tokens=4, sampling=GREEDY)
    with pytest.raises(UserInputError, match="context holds 1024"):
        tiny.generate(req)
    # and the engine still works
    assert tiny.generate(GenerationRequest(prompt="hi", max_tokens=2, sampling=GREEDY))[1]


def test_close_frees_and_refuses_further_use(tiny_gguf: Path) -> None:
    eng = Engine.load(EngineConfig(tiny_gguf, n_ctx=256))
    eng.close()
    eng.close()  # idempotent
    with pytest.raises(EngineError, match="closed"):
        eng.generate(GenerationRequest(prompt="x", max_tokens=1))
    # loading again after close works (memory was released, not leaked into a dead engine)
    with Engine.load(EngineConfig(tiny_gguf, n_ctx=256)) as again:
        assert (
            again.generate(
                GenerationRequest(prompt="x", max_tokens=2, sampling=GREEDY, ignore_eos=True)
            )[1].generated_tokens
            == 2
        )


def test_flash_attention_on_the_cpu(tmp_path: Path, cpu_threads: int) -> None:
    """auto is off on the CPU unless the V cache is quantized, which needs flash attention
    (llama.cpp's auto then turns it on); off with a quantized V cache is a clear load error."""
    from tests.gguf_factory import write_tiny_llama

    path = write_tiny_llama(tmp_path / "head32.gguf", n_embd=128)  # q8_0 blocks need 32 | head
    greedy2 = GenerationRequest(prompt="x", max_tokens=2, sampling=GREEDY, ignore_eos=True)
    with Engine.load(EngineConfig(path, n_ctx=256, n_threads=cpu_threads)) as eng:
        assert not eng.info.flash_attn
    q8 = EngineConfig(path, n_ctx=256, n_threads=cpu_threads, type_k="q8_0", type_v="q8_0")
    with Engine.load(q8) as eng:
        assert eng.info.flash_attn
        assert eng.generate(greedy2)[1].generated_tokens == 2
    with pytest.raises(ModelLoadError, match="flash_attn"):
        Engine.load(replace(q8, flash_attn="off"))


def test_bad_request_values() -> None:
    with pytest.raises(UserInputError):
        GenerationRequest(max_tokens=4)
    with pytest.raises(UserInputError):
        GenerationRequest(prompt="x", max_tokens=0)
    with pytest.raises(UserInputError):
        SamplingParams(top_p=1.5)
    with pytest.raises(UserInputError):
        EngineConfig(Path("x"), flash_attn="maybe").validate()


def test_bad_engine_config_values_name_the_knob() -> None:
    with pytest.raises(UserInputError, match=r"n_threads must be in \[1, "):
        EngineConfig(Path("x"), n_threads=-1).validate()
    with pytest.raises(UserInputError, match="type_v must be one of"):
        EngineConfig(Path("x"), type_v="q3").validate()  # type: ignore[arg-type]
    with pytest.raises(UserInputError, match="backend_sampling"):
        EngineConfig(Path("x"), backend_sampling="gpu").validate()  # type: ignore[arg-type]


def test_every_engine_shares_one_base() -> None:
    """stream, generate and ``with`` come from EngineBase, not from each engine's own copy."""
    from llcuda_tui.core.engine import EngineBase, ProcessEngine
    from llcuda_tui.core.mpi.pool import PoolEngine
    from llcuda_tui.core.worker.batch import BatchEngine
    from llcuda_tui.core.worker.client import RemoteEngine

    for cls in (Engine, ProcessEngine, RemoteEngine, BatchEngine, PoolEngine):
        assert issubclass(cls, EngineBase), cls
        for name in ("generate", "__enter__", "__exit__"):
            assert getattr(cls, name) is getattr(EngineBase, name), (cls, name)


def test_a_fallback_needs_its_markers_in_the_vocabulary(tiny: Engine) -> None:
    # the tiny model is a llama without Llama 3's special tokens: their framing would be
    # plain text there (~40 bytes a message), so it gets llama.cpp's own fallback, ChatML
    assert tiny.info.chat_template == "fallback:chatml"
    msgs = [{"role": "user", "content": "Hi"}]
    assert tiny.template.render(msgs) == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    from llcuda_tui.core.engine._templates import choose_template

    known = choose_template(None, "llama", "<s>", "</s>", is_token=lambda _t: True)
    assert known.origin == "fallback:llama" and "<|start_header_id|>" in known.source
    unknown = choose_template(None, "llama", "<s>", "</s>", is_token=lambda t: t != "<|eot_id|>")
    assert unknown.origin == "fallback:chatml"
