"""Benchmarks on the GPU machine (pytest -m gpu): energy, validity, bandwidth, and agreement
with llama-bench. Skipped without an NVIDIA GPU and a CUDA build of llama-cpp-python."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from llcuda_tui.core.bench import (
    BenchSpec,
    BenchStore,
    LatencySpec,
    ModelRef,
    default_prompts,
    run_bench,
    run_latency,
)

pytestmark = [pytest.mark.gpu, pytest.mark.timeout(600)]
ROOT = Path(__file__).resolve().parents[2]
BENCH_MODEL = Path(os.environ.get("LLCUDA_BENCH_MODEL", "/root/models/8b-q4km.gguf"))


def test_gpu_rows_carry_energy_validity_and_efficiency(gpu_model: Path, tmp_path: Path) -> None:
    spec = BenchSpec(models=(ModelRef(gpu_model, "gpu-model"),), n_prompt=(512,), n_gen=(128,),
                     repetitions=3)  # fmt: skip
    with BenchStore(tmp_path / "b.sqlite") as store:
        run = run_bench(spec, store=store)
        pp, tg = run.results
        assert pp["backend"].startswith("CUDA0") and pp["backends"] == "CUDA"
        for r in (pp, tg):
            assert r["gpu_uuid"] and r["gpu_uuid"].startswith("GPU-") and r["driver_version"]
            assert r["energy_j"] and r["energy_j"] > 0 and r["j_per_token"] > 0
            assert r["energy_samples"] >= 3 and r["energy_window_s"] >= 1.0
            assert r["energy_updates_seen"] >= 1
            assert r["sm_clock_mhz_min"] and r["sm_clock_mhz_min"] > 0
            assert r["telemetry_samples"] >= 6 and isinstance(r["valid"], bool)
            assert r["power_w_mean"] and r["temperature_c_max"]
        assert tg["memory_bandwidth_bytes_per_s"] > 5e11
        assert 0 < tg["bandwidth_efficiency"] < 1.5  # tiny models are launch-bound: low
        assert pp["bandwidth_efficiency"] is None  # a decode figure only
        first = store.bandwidth(tg["gpu_uuid"])
        assert first is not None
        again = run_bench(spec, store=store)  # bandwidth is measured once per GPU
        assert store.bandwidth(tg["gpu_uuid"])["measured_at"] == first["measured_at"]  # type: ignore[index]
        assert again.results[1]["memory_bandwidth_bytes_per_s"] == first["bytes_per_s"]


def test_cudart_bandwidth_and_device_mapping() -> None:
    from llcuda_tui.core.gpu import measure_bandwidth, normalize_bus_id, pci_bus_id, snapshot

    bw = measure_bandwidth(0)
    assert bw.bytes_per_s > 5e11, bw
    bus = normalize_bus_id(pci_bus_id(0))
    s = snapshot()
    assert bus in [normalize_bus_id(g.pci_bus_id or "") for g in s.gpus]


def test_gpu_latency_reports_energy_per_token(gpu_model: Path) -> None:
    spec = LatencySpec(ModelRef(gpu_model, "gpu-model"), default_prompts(4), iters=4, warmup=1,
                       max_tokens=64)  # fmt: skip
    lat = run_latency(spec).latency
    assert lat is not None and lat["completed"] == 4
    assert lat["window_j_per_token"] and lat["window_j_per_token"] > 0
    assert lat["gpu_uuid"]


def test_llcuda_gpu_json_shows_energy_clocks_reasons_processes() -> None:
    llcuda = shutil.which("llcuda")
    cmd = [llcuda] if llcuda else [sys.executable, "-m", "llcuda_tui"]
    proc = subprocess.run([*cmd, "gpu", "--json"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    g = json.loads(proc.stdout)["gpus"][0]
    assert g["energy_mj"] > 0 and g["sm_clock_mhz"] > 0 and g["memory_clock_mhz"] > 0
    assert isinstance(g["clock_event_reasons"], list)
    assert g["processes"] is not None and g["self_memory_bytes"] is not None


@pytest.mark.skipif(shutil.which("llama-bench") is None, reason="llama-bench not on PATH")
@pytest.mark.skipif(not BENCH_MODEL.is_file(), reason=f"no benchmark model at {BENCH_MODEL}")
def test_the_llama_bench_comparison_runs_both_tests(tmp_path: Path) -> None:
    """The comparison script runs and reports pp and tg against llama-bench; how close they
    are is a benchmark's (docs/benchmarks.md), not a test's: a timed assertion fails under
    load."""
    out = Path(os.environ.get("LLCUDA_VS_OUT", tmp_path / "vs.json"))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_vs_llama_bench.py"), str(BENCH_MODEL),
         "-p", "512", "-n", "128", "-r", "5", "--json", str(out)],
        capture_output=True, text=True, timeout=580,
    )  # fmt: skip
    print(proc.stdout, proc.stderr[-2000:])
    rows = json.loads(out.read_text())["comparison"]
    assert {r["test"] for r in rows} == {"pp512", "tg128"}
    for r in rows:
        assert r["ratio"] > 0 and math.isfinite(r["ratio"]), r
    assert proc.returncode in (0, 1)  # 1: a ratio outside the script's tolerance, not a crash
