"""The engine on a CUDA build (run on the GPU machine: pytest -m gpu)."""

from __future__ import annotations

from pathlib import Path

import pytest

from llcuda_tui.core.backend import list_devices
from llcuda_tui.core.engine import Engine, EngineConfig, GenerationRequest
from llcuda_tui.core.sampling import SamplingParams

pytestmark = pytest.mark.gpu
GREEDY = SamplingParams(temperature=0.0)


def _free_vram() -> int:
    return next(d.free_bytes for d in list_devices() if d.kind == "GPU")


def test_full_offload_uses_cuda_and_backend_sampling(gemma_path: Path) -> None:
    with Engine.load(EngineConfig(gemma_path)) as eng:
        info = eng.info
        assert info.backend.startswith("CUDA0"), info.backend
        assert info.n_layers_offloaded == info.n_layers
        assert info.flash_attn and info.backend_sampling
        text, rec = eng.generate(GenerationRequest(prompt="1, 2, 3, 4, 5,", max_tokens=8,
                                                   sampling=GREEDY))  # fmt: skip
        assert text.startswith(" 6, 7, 8"), text
        assert rec.backend.startswith("CUDA0")


def test_partial_offload(gemma_path: Path) -> None:
    with Engine.load(EngineConfig(gemma_path, n_gpu_layers=6)) as eng:
        assert eng.info.n_layers_offloaded == 6
        assert not eng.info.backend_sampling  # auto: CPU sampling unless fully offloaded
        text, _ = eng.generate(GenerationRequest(prompt="1, 2, 3, 4, 5,", max_tokens=6,
                                                 sampling=GREEDY))  # fmt: skip
        assert text.startswith(" 6, 7"), text


def test_backend_sampling_seeded_is_deterministic(smollm_path: Path) -> None:
    sp = SamplingParams(temperature=1.0, seed=1234)
    req = GenerationRequest(prompt="Once upon a time", max_tokens=32, sampling=sp,
                            ignore_eos=True)  # fmt: skip
    with Engine.load(EngineConfig(smollm_path)) as eng:
        assert eng.info.backend_sampling
        assert eng.generate(req)[0] == eng.generate(req)[0]


def test_close_releases_gpu_memory(gemma_path: Path) -> None:
    before = _free_vram()
    eng = Engine.load(EngineConfig(gemma_path, n_ctx=8192))
    loaded = _free_vram()
    assert before - loaded > 200 * 2**20  # weights + KV + compute buffers on the GPU
    eng.close()
    after = _free_vram()
    assert before - after < 64 * 2**20, (before, loaded, after)
