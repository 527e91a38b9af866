"""The engine on a CUDA build (run on the GPU machine: pytest -m gpu).

Uses the generated tiny model, plus a bigger GGUF named by LLCUDA_TEST_GPU_MODEL (the device
recipe's synthetic small262k model) for the memory test.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from llcuda_tui.core.engine import (
    Engine,
    EngineConfig,
    GenerationRequest,
    SamplingParams,
    list_devices,
)

pytestmark = pytest.mark.gpu
GREEDY = SamplingParams(temperature=0.0)


def _free_vram() -> int:
    return next(d.free_bytes for d in list_devices() if d.kind == "GPU")


def _greedy_text(eng: Engine, n: int = 48) -> str:
    req = GenerationRequest(prompt="hello world", max_tokens=n, sampling=GREEDY, ignore_eos=True)
    return eng.generate(req)[0]


def test_full_offload_uses_cuda_and_backend_sampling(tiny_gguf: Path) -> None:
    with Engine.load(EngineConfig(tiny_gguf)) as eng:
        info = eng.info
        assert info.backend.startswith("CUDA0"), info.backend
        assert info.n_layers_offloaded == info.n_layers
        assert info.backend_sampling
        on_gpu = _greedy_text(eng)
        _, rec = eng.generate(GenerationRequest(prompt="hello", max_tokens=4, sampling=GREEDY,
                                                ignore_eos=True))  # fmt: skip
        assert rec.backend.startswith("CUDA0") and rec.generated_tokens == 4
    # the GPU's argmax picks the same tokens as the CPU sampler over the same logits
    with Engine.load(EngineConfig(tiny_gguf, backend_sampling="off")) as eng:
        assert not eng.info.backend_sampling
        assert _greedy_text(eng) == on_gpu


@pytest.mark.parametrize("n_embd, kernel", [(256, True), (64, False)])
def test_auto_flash_attention_only_where_cuda_has_a_kernel(
    tmp_path: Path, n_embd: int, kernel: bool
) -> None:
    """4 heads of 64 (CUDA has a flash-attention kernel) vs. 4 heads of 16 (none): forcing it on
    for the latter would run every layer's attention on the CPU."""
    from tests.gguf_factory import write_tiny_llama

    path = write_tiny_llama(tmp_path / f"tiny-{n_embd}.gguf", n_embd=n_embd)
    with Engine.load(EngineConfig(path)) as eng:
        assert eng.info.flash_attn is kernel
        assert len(_greedy_text(eng, 8)) > 0
    with Engine.load(EngineConfig(path, flash_attn="on")) as eng:
        assert eng.info.flash_attn


def test_partial_offload(tiny_gguf: Path) -> None:
    with Engine.load(EngineConfig(tiny_gguf, n_gpu_layers=1)) as eng:
        assert eng.info.n_layers_offloaded == 1
        assert not eng.info.backend_sampling  # auto: CPU sampling unless fully offloaded
        assert len(_greedy_text(eng, 8)) > 0


def test_backend_sampling_seeded_is_deterministic(tiny_gguf: Path) -> None:
    def run(eng: Engine, seed: int) -> str:
        sp = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=seed)
        req = GenerationRequest(prompt="hello", max_tokens=32, sampling=sp, ignore_eos=True)
        return eng.generate(req)[0]

    with Engine.load(EngineConfig(tiny_gguf)) as eng:
        assert eng.info.backend_sampling
        assert run(eng, 1234) == run(eng, 1234)
        assert run(eng, 1234) != run(eng, 4321)


def test_close_releases_gpu_memory(gpu_model: Path) -> None:
    model = str(gpu_model)
    before = _free_vram()
    eng = Engine.load(EngineConfig(Path(model), n_ctx=8192))
    loaded = _free_vram()
    assert before - loaded > 200 * 2**20  # weights + KV + compute buffers on the GPU
    eng.close()
    after = _free_vram()
    assert before - after < 64 * 2**20, (before, loaded, after)
    # and a second model loads into the freed memory
    with Engine.load(EngineConfig(Path(model), n_ctx=8192)) as again:
        assert again.info.backend.startswith("CUDA0")


def test_a_grammar_samples_on_the_cpu_and_the_next_request_on_the_gpu(tiny_gguf: Path) -> None:
    """A grammar's request detaches the backend chain (a rejection needs the logits, which a
    backend sampler keeps on the GPU); its greedy reply is the CPU engine's, and the next
    request without a grammar samples on the GPU again with the same text as before."""
    from llcuda_tui.core.engine import json_schema_grammar

    grammar = json_schema_grammar({"type": "array", "items": {"type": "integer"}, "maxItems": 4})
    constrained = SamplingParams(temperature=0.0, grammar=grammar)
    req = GenerationRequest(prompt="hello world", max_tokens=40, sampling=constrained)
    with Engine.load(EngineConfig(tiny_gguf)) as eng:
        assert eng.info.backend_sampling
        free = _greedy_text(eng)
        text, rec = eng.generate(req)
        assert rec.grammar_rejections > 0  # the random model's own pick is often not allowed
        assert _greedy_text(eng) == free
        assert eng._backend_sampling  # the engine still offers its chains to the GPU
    with Engine.load(EngineConfig(tiny_gguf, backend_sampling="off")) as eng:
        assert eng.generate(req)[0] == text
