"""`llcuda models quantize` on a generated F16 GGUF: real llama_model_quantize, real store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from llcuda_tui.core.config import Settings
from llcuda_tui.core.engine import Engine, EngineConfig, GenerationRequest, SamplingParams
from llcuda_tui.core.errors import UserInputError
from llcuda_tui.core.experiment import parse_types, quantize
from llcuda_tui.core.store import QuantizedSource, Store
from tests.gguf_factory import write_tiny_llama

LLCUDA = str(Path(sys.executable).parent / "llcuda")
pytestmark = pytest.mark.timeout(240)


@pytest.fixture()
def store_with_f16(settings: Settings, tmp_path: Path) -> Store:
    store = Store.from_settings(settings)
    f16 = write_tiny_llama(tmp_path / "tiny-F16.gguf", f16=True)
    store.import_path(f16, name="tiny-F16")
    return store


def test_quantize_f16_into_two_types(store_with_f16: Store, cpu_threads: int) -> None:
    store = store_with_f16
    source = store.entry("tiny-F16")
    assert source.manifest.quant == "F16"
    progress: list[tuple[str, int, int]] = []
    results = quantize(
        store, "tiny-F16", ["Q8_0", "Q4_0"], on_progress=lambda *a: progress.append(a)
    )
    assert [r.entry.name for r in results] == ["tiny-Q8_0", "tiny-Q4_0"]
    assert {p[0] for p in progress} == {"Q8_0", "Q4_0"}  # per-tensor progress from the log
    assert all(done <= total for _, done, total in progress)
    sizes = []
    for r, qtype in zip(results, ["Q8_0", "Q4_0"], strict=True):
        entry = store.entry(r.entry.name)  # a real store entry, found by name
        assert entry.manifest.quant == qtype
        src = entry.manifest.source
        assert isinstance(src, QuantizedSource)
        assert src.source_sha256 == source.sha256 and src.type == qtype
        assert src.source_quant == "F16" and not src.requantized
        assert entry.sha256 != source.sha256
        sizes.append(entry.manifest.size)
        cfg = EngineConfig(entry.path, n_ctx=256, n_threads=cpu_threads)
        with Engine.load(cfg) as engine:
            req = GenerationRequest(
                prompt="hello world",
                max_tokens=8,
                sampling=SamplingParams(temperature=0.0),
                ignore_eos=True,
            )
            text, record = engine.generate(req)
            assert record.generated_tokens == 8 and text
    assert sizes[1] < sizes[0] < source.manifest.size  # Q4_0 < Q8_0 < F16
    # asking again makes nothing new
    again = quantize(store, "tiny-F16", ["Q8_0"])
    assert not again[0].created and again[0].entry.sha256 == results[0].entry.sha256


def test_requantizing_is_refused_unless_asked(store_with_f16: Store) -> None:
    store = store_with_f16
    quantize(store, "tiny-F16", ["Q8_0"])
    with pytest.raises(UserInputError, match="already quantized"):
        quantize(store, "tiny-Q8_0", ["Q4_0"])
    warnings: list[str] = []
    (r,) = quantize(store, "tiny-Q8_0", ["Q4_0"], allow_requantize=True, on_warning=warnings.append)
    assert warnings and "re-quantizing" in warnings[0]
    src = store.entry(r.entry.name).manifest.source
    assert isinstance(src, QuantizedSource) and src.requantized and src.source_quant == "Q8_0"


def test_unknown_type_is_one_line() -> None:
    with pytest.raises(UserInputError, match="unknown quantization type 'Q9_X'"):
        parse_types("Q4_0,q9_x")
    assert parse_types("q4_k_m, Q8_0,Q4_K_M") == ["Q4_K_M", "Q8_0"]


def test_cli_quantize(store_with_f16: Store) -> None:
    proc = subprocess.run(
        [LLCUDA, "models", "quantize", "tiny-F16", "--type", "Q8_0"],
        capture_output=True,
        text=True,
        timeout=200,
        env=dict(os.environ),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("tiny-Q8_0  Q8_0  ")
    proc = subprocess.run(
        [LLCUDA, "models", "quantize", "tiny-Q8_0", "--type", "Q4_0"],
        capture_output=True,
        text=True,
        timeout=200,
        env=dict(os.environ),
    )
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "already quantized" in lines[0] and "Traceback" not in proc.stderr
